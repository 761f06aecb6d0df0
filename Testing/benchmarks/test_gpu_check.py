"""benchmarks/gpu_check.py's plumbing: one failing check is recorded and the others still run.

The ``--cpu`` run itself takes minutes on 2 cores (it trains three methods, fine-tunes, segments and
starts torchrun), too long for the suite: run ``bash benchmarks/gpu_check.sh --cpu`` for that.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_check_is_recorded_and_the_rest_still_run(gpu_check, tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    def skipped(ctx):
        raise gpu_check.Skip("1 GPU visible; the 2-process run needs 2")

    def timed(ctx):
        return [{"name": "pretrain", "method": "s2dc", "precision": "fp32", "steps_per_s": 2.5, "step_s": 0.4,
                 "host_peak_mib": 900, "status": "ok"}]

    monkeypatch.setattr(gpu_check, "CHECK_FUNCTIONS", {**gpu_check.CHECK_FUNCTIONS, "finetune": broken,
                                                       "ddp": skipped, "pretrain": timed})
    code = gpu_check.main(["--cpu", "--out", str(tmp_path), "--checks", "environment,pretrain,finetune,ddp"])
    assert code == 1  # a failed check makes the exit status non-zero
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["environment"]["status"] == "ok" and by_name["pretrain"]["steps_per_s"] == 2.5
    assert by_name["finetune"]["status"] == "failed"
    assert by_name["finetune"]["reason"] == "RuntimeError: CUDA out of memory."
    assert by_name["ddp"]["status"] == "skipped"
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| pretrain | s2dc | fp32 | ok | 2.5 |" in table and "RuntimeError: CUDA out of memory." in table


def test_unknown_check_is_a_usage_error(gpu_check, tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.main(["--cpu", "--out", str(tmp_path), "--checks", "nope"])
