"""The training loop without a process group: deferred reads, the non-finite check, fp16 skips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from S2DCCore.losses.terms import LossTerms
from S2DCCore.training.loop import NonFiniteLossError, run_loop, train_step
from S2DCCore.training.optim import make_scheduler


class Task(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)

    def forward(self, batch):
        loss = self.net(batch["x"]).pow(2).mean()
        return LossTerms(total=loss, parts={"mse": loss.detach()})


def _batches(bad_steps=(), value=float("nan")):
    step = 0
    while True:
        step += 1
        yield {"x": torch.full((2, 4), value if step in bad_steps else 1.0)}


def _run(task, batches, total, scaler=None, sync_at=None):
    optimizer = torch.optim.SGD(task.parameters(), lr=0.01)
    seen = []
    run_loop(task, batches, optimizer, make_scheduler(optimizer, 0, total),
             scaler or torch.amp.GradScaler("cpu", enabled=False), device=torch.device("cpu"), start_step=0,
             total_steps=total, precision="fp32", grad_clip=1.0, on_step=lambda s, r: seen.append((s, r)),
             sync_at=sync_at)
    return seen


def test_numbers_are_read_only_at_sync_steps_and_the_last():
    seen = _run(Task(), _batches(), 5, sync_at=lambda step: step % 2 == 0)
    assert [s for s, r in seen if r.synced] == [2, 4, 5]
    assert all(r.loss == r.loss and "mse" in r.parts for s, r in seen if r.synced)
    assert all(r.loss != r.loss and not r.parts for s, r in seen if not r.synced)


def test_a_nan_between_syncs_stops_the_run_at_the_next_sync():
    with pytest.raises(NonFiniteLossError, match="first non-finite at step 2"):
        _run(Task(), _batches(bad_steps=(2,)), 6, sync_at=lambda step: step % 3 == 0)


def test_fp16_overflow_is_skipped_by_the_scaler_not_fatal():
    """GradScaler skips an overflowing step and lowers the scale; the old loop raised before backward."""
    task = Task()
    optimizer = torch.optim.SGD(task.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    before = [p.detach().clone() for p in task.parameters()]
    batch = {"x": torch.full((2, 4), float("inf"))}
    train_step(task, batch, optimizer, scaler, torch.device("cpu"), "fp16", 1.0, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, task.parameters()))  # the step was skipped
    assert scaler.get_scale() == 2.0**15
    train_step(task, {"x": torch.ones(2, 4)}, optimizer, scaler, torch.device("cpu"), "fp16", 1.0, 1)
    assert not all(torch.equal(a, b) for a, b in zip(before, task.parameters()))


def test_fp16_gives_up_after_many_consecutive_skips(monkeypatch):
    from S2DCCore.training import loop

    monkeypatch.setattr(loop, "FP16_MAX_SKIPS", 3)
    with pytest.raises(NonFiniteLossError):
        _run(Task(), _batches(bad_steps=range(1, 100), value=float("inf")), 6,
             scaler=torch.amp.GradScaler("cpu", enabled=True))
