"""Run by ``test_ddp_correctness.py`` under ``torchrun`` (gloo, 2 ranks); writes ``OUT/rank{r}.json``.

Modes: ``nonfinite`` (rank 1's loss is NaN at step 2 of a toy DDP run) and ``validate`` (sharded
fine-tuning validation of three cases). Every outcome, errors included, is written, never raised, so
the test can read what each rank saw.
"""

from __future__ import annotations

import datetime
import json
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def nonfinite(rank: int) -> dict:
    from S2DCCore.losses.terms import LossTerms
    from S2DCCore.training.loop import NonFiniteLossError, run_loop
    from S2DCCore.training.optim import make_scheduler

    class Task(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 1)

        def forward(self, batch):
            loss = self.net(batch["x"]).pow(2).mean()
            return LossTerms(total=loss, parts={"mse": loss.detach()})

    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Task())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def batches():
        step = 0
        while True:
            step += 1
            yield {"x": torch.full((2, 4), float("nan") if rank == 1 and step == 2 else 1.0)}

    steps = []
    try:
        run_loop(model, batches(), optimizer, make_scheduler(optimizer, 0, 5), torch.amp.GradScaler("cpu", enabled=False),
                 device=torch.device("cpu"), start_step=0, total_steps=5, precision="fp32", grad_clip=1.0,
                 on_step=lambda step, result: steps.append(step))
        return {"error": None, "steps": steps}
    except NonFiniteLossError as exc:
        return {"error": "NonFiniteLossError", "message": str(exc), "steps": steps}


def validate(rank: int) -> dict:
    from S2DCCore.training.validation import validate_segmentation

    torch.manual_seed(0)
    network = nn.Conv3d(1, 3, kernel_size=3, padding=1)
    calls = []
    forward = network.forward
    network.forward = lambda x: (calls.append(x.shape[0]), forward(x))[1]
    generator = torch.Generator().manual_seed(1)
    cases = [{"image": torch.rand(1, 40, 36, 32, generator=generator),
              "label": torch.randint(0, 3, (1, 40, 36, 32), generator=generator)} for _ in range(3)]
    dice = validate_segmentation(network, cases, roi=(32, 32, 32), overlap=0.25, device=torch.device("cpu"),
                                 precision="fp32", names=["bg", "a", "b"])
    return {"error": None, "dice": dice, "windows": sum(calls)}


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    rank = dist.get_rank()
    try:
        result = {"nonfinite": nonfinite, "validate": validate}[mode](rank)
    except Exception as exc:  # report, do not raise: the test reads every rank's outcome
        result = {"error": type(exc).__name__, "message": str(exc)[-2000:], "traceback": traceback.format_exc()[-3000:]}
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
