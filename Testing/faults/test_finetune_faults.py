"""Fine-tuning under faults: SIGKILL during a step or while the best model is exported, then ``--resume``
equals the uninterrupted run bit for bit (CPU, one thread) and leaves no temporary file."""

from __future__ import annotations

import pytest

from faultkit import TRAIN, assert_same_model, kill_after_step, leftovers, metric_steps, run_killed
from S2DCCore.checkpoint import load_state
from S2DCCore.cli.main import main
from S2DCCore.utils.run_lock import LOCK_NAME

STEPS = 3


def finetune_args(cohort, out):
    return ["finetune", "--data", cohort, "--out", out, "--preset", "tiny", "--steps", STEPS, "--train-cases", 2,
            *TRAIN, "val_cases=1", f"val_every={STEPS}", "roi=[32,32,32]", "batch_size=1"]


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "finetune"
    assert main([str(a) for a in finetune_args(cohort, out) + ["progress=none"]]) == 0
    return out


@pytest.mark.parametrize("fault", ["step", "export.write"])
def test_killed_then_resumed_equals_uninterrupted(cohort, tmp_path, reference, fault):
    run = tmp_path / "run"
    args = finetune_args(cohort, run)
    if fault == "step":
        kill_after_step(*args, step=2)  # during step 3
    else:
        run_killed(*args, "progress=none", fault=fault)  # the best model written, not yet renamed in
    assert not (run / "model").exists()
    assert main([str(a) for a in args + ["progress=none", "--resume"]]) == 0
    assert_same_model(reference / "model", run / "model", exact=True)
    assert metric_steps(run) == metric_steps(reference)
    assert load_state(run / "checkpoints" / "last")["step"] == STEPS
    assert leftovers(run) == [] and not (run / LOCK_NAME).exists()
