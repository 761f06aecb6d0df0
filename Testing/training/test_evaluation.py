"""Evaluation metrics against hand-computed cases, and case selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from S2DCCore.data.cohort import Case
from S2DCCore.errors import UsageError
from S2DCCore.evaluation import CaseScore, bar_plot, dice_score, hd95_mm, select_cases, summarize


def test_dice_hand_computed():
    pred = np.zeros((4, 4, 4), bool)
    ref = np.zeros((4, 4, 4), bool)
    pred[:2] = True   # 32 voxels
    ref[1:3] = True   # 32 voxels, 16 shared
    assert dice_score(pred, ref) == pytest.approx(2 * 16 / 64)
    assert math.isnan(dice_score(np.zeros(3, bool), np.zeros(3, bool)))
    assert dice_score(ref, ref) == 1.0


def test_hd95_of_a_shifted_cube_in_mm():
    ref = np.zeros((20, 20, 20), bool)
    ref[5:10, 5:10, 5:10] = True
    pred = np.roll(ref, 2, axis=0)  # every surface point moves by ≤ 2 voxels along x
    assert hd95_mm(pred, ref, (1.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert hd95_mm(pred, ref, (3.0, 1.0, 1.0)) == pytest.approx(6.0)  # spacing along x scales it
    assert math.isnan(hd95_mm(np.zeros_like(ref), ref, (1, 1, 1)))


def test_select_cases_heldout_excludes_training():
    cases = (Case("a", "a.nii", "la.nii"), Case("b", "b.nii", "lb.nii"), Case("c", "c.nii", None),
             Case("d", "d.nii", "ld.nii", split="test"))
    assert [c.name for c in select_cases(cases, "heldout", ["a"])] == ["b", "d"]
    assert [c.name for c in select_cases(cases, "test", [])] == ["d"]
    assert [c.name for c in select_cases(cases, "all", [])] == ["a", "b", "d"]
    with pytest.raises(UsageError, match="--split"):
        select_cases(cases, "nope", [])


def test_summary_skips_nan_and_plots(tmp_path):
    scores = [CaseScore("a", "liver", 1, 0.8, 3.0), CaseScore("b", "liver", 1, 0.6, 5.0),
              CaseScore("a", "spleen", 2, float("nan"), float("nan")), CaseScore("b", "spleen", 2, 0.5, 2.0)]
    summary = summarize(scores)
    assert summary["structures"]["liver"]["dice_mean"] == pytest.approx(0.7)
    assert summary["structures"]["liver"]["dice_std"] == pytest.approx(0.1)
    assert summary["structures"]["spleen"] == {"dice_mean": 0.5, "dice_std": 0.0, "hd95_mean_mm": 2.0, "n": 1}
    assert summary["mean_dice"] == pytest.approx(0.6)
    png = bar_plot(summary, tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
