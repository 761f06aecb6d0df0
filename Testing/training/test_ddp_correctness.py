"""Two gloo ranks under torchrun: the non-finite check is agreed by all ranks; validation is sharded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(mode: str, out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(WORKER), mode, str(out)], capture_output=True, text=True, timeout=300, env=env)
    ranks = []
    for rank in (0, 1):
        path = out / f"rank{rank}.json"
        assert path.is_file(), f"rank {rank} wrote nothing: {result.stderr[-3000:]}"
        ranks.append(json.loads(path.read_text()))
    return ranks


def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    # The old per-rank check raised on rank 1 before backward while rank 0 waited in DDP's all-reduce.
    ranks = _torchrun("nonfinite", tmp_path)
    for outcome in ranks:
        assert outcome["error"] == "NonFiniteLossError", outcome
        assert "first non-finite at step 2" in outcome["message"]
    assert ranks[0]["steps"] == ranks[1]["steps"] == [1]


def test_validation_is_sharded_and_every_rank_gets_the_mean(tmp_path):
    import torch

    from S2DCCore.training.validation import validate_segmentation

    ranks = _torchrun("validate", tmp_path)
    assert all(r["error"] is None for r in ranks), ranks
    assert ranks[0]["dice"] == pytest.approx(ranks[1]["dice"])
    # Case i runs on rank i mod 2: rank 0 validates two cases, rank 1 one (same window count per case).
    assert ranks[1]["windows"] > 0 and ranks[0]["windows"] == 2 * ranks[1]["windows"]
    # The same numbers as one process validating all three cases.
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 3, kernel_size=3, padding=1)
    generator = torch.Generator().manual_seed(1)
    cases = [{"image": torch.rand(1, 40, 36, 32, generator=generator),
              "label": torch.randint(0, 3, (1, 40, 36, 32), generator=generator)} for _ in range(3)]
    alone = validate_segmentation(network, cases, roi=(32, 32, 32), overlap=0.25, device=torch.device("cpu"),
                                  precision="fp32", names=["bg", "a", "b"])
    assert ranks[0]["dice"] == pytest.approx(alone)
