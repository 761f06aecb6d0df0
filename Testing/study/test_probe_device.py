"""The study's frozen-encoder passes run on the study's device (issue 14, item 5)."""

from __future__ import annotations

import pytest
import torch

from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
from S2DCCore.study import probe, runner
from S2DCCore.study.config import StudyConfig
from S2DCCore.study.plan import plan_study


class _Stop(Exception):
    pass


def test_probe_encoder_runs_on_the_study_device(tmp_path, monkeypatch):
    cohort = write_phantom_cohort(tmp_path / "cohort", cases=2, seed=3, config=PhantomConfig(size=32))
    config = StudyConfig(methods=("scratch",), label_counts=(1,), finetune_label_counts=(1,), seeds=(0,),
                         pretrain_steps=1, finetune_steps=1, test_cases=1, probe_voxels=10, device="cpu")
    plan = plan_study(cohort, config)
    floor = tmp_path / "out" / "floors" / "intensity_only"
    floor.mkdir(parents=True)
    (floor / "k1_s0.json").write_text("{}")  # the intensity floor is done: only the encoder probe runs
    seen = []

    def record(image, encoder, preprocess, *, stages, device=None, **kwargs):
        seen.append(device)
        raise _Stop

    monkeypatch.setattr(probe, "encoder_features", record)
    with pytest.raises(_Stop):
        runner._probe_cells(tmp_path / "out", plan, config, {})
    assert seen == [torch.device("cpu")]
