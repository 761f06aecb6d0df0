"""``s2dc study`` under faults: a probe-only study (``--finetune-label-counts ""``) killed while a cell is
written continues on rerun to exactly the uninterrupted results; a second study process on the folder is
refused with one line."""

from __future__ import annotations

import json

import pytest

from faultkit import leftovers, one_line_error, run_killed
from S2DCCore.cli.main import main
from S2DCCore.utils.run_lock import LOCK_NAME, acquire_run_lock


def study_args(cohort, out):
    return ["study", "--data", cohort, "--out", out, "--methods", "scratch,s2dc", "--label-counts", "1",
            "--finetune-label-counts", "", "--seeds", "0", "--pretrain-steps", 2, "--test-cases", 1,
            "--device", "cpu"]


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "study"
    assert main([str(a) for a in study_args(cohort, out)]) == 0
    return out


def probe_cells(study):
    return {str(p.relative_to(study)): {k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"}
            for p in sorted(study.rglob("k*_s*.json"))}


def test_probe_only_study_writes_results(reference):
    summary = json.loads((reference / "results" / "summary.json").read_text())
    assert summary["finetune"] == {} and summary["config"]["finetune_label_counts"] == []
    assert set(summary["probe"]) == {"scratch", "s2dc"}
    assert {p.name for p in (reference / "results").iterdir()} >= {"table.md", "results.csv", "summary.json"}
    assert not (reference / "finetune").exists() and leftovers(reference) == []


def test_killed_while_writing_a_cell_then_rerun_equals_uninterrupted(cohort, tmp_path, reference):
    out = tmp_path / "study"
    # Writes: 1 study.json, 2 the pretrain cell, 3 the first probe cell (the intensity floor): killed there.
    run_killed(*study_args(cohort, out), fault="cell.write@3")
    assert (out / "pretrain" / "s2dc" / "result.json").is_file() and not (out / "results").exists()
    assert not list((out / "floors").rglob("k*_s*.json"))  # only its temporary, which the rerun sweeps
    assert main([str(a) for a in study_args(cohort, out)]) == 0
    assert probe_cells(out) == probe_cells(reference)
    assert leftovers(out) == [] and not (out / LOCK_NAME).exists()


def test_second_study_on_the_folder_is_refused(cohort, tmp_path, capsys):
    out = tmp_path / "study"
    lock = acquire_run_lock(out, command="s2dc study (the first one)")
    try:
        assert main([str(a) for a in study_args(cohort, out)]) == 75
    finally:
        lock.release()
    line = one_line_error(capsys.readouterr().err, "study")
    assert str(out) in line and "s2dc study (the first one)" in line
    assert list(out.iterdir()) == []  # the refused study wrote nothing
