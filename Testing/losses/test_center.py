"""The shared teacher centre: hand-computed EMA updates, shapes, and the all-reduce under a 2-process gloo group."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from S2DCCore.losses.center import Center


def test_class_centre_update_by_hand():
    center = Center((1, 3), momentum=0.9)
    center.update(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))  # batch mean (2, 2, 2)
    torch.testing.assert_close(center.value, torch.tensor([[0.2, 0.2, 0.2]]))
    center.update(torch.tensor([[0.2, 0.2, 1.2]]))  # 0.9·0.2 + 0.1·x
    torch.testing.assert_close(center.value, torch.tensor([[0.2, 0.2, 0.3]]))
    torch.testing.assert_close(center(torch.ones(2, 3)), torch.tensor([[0.8, 0.8, 0.7]] * 2))


def test_patch_centre_averages_batch_and_tokens():
    center = Center((1, 1, 2), momentum=0.5)
    x = torch.tensor([[[1.0, 0.0], [3.0, 0.0]], [[5.0, 4.0], [7.0, 8.0]]])  # (B=2, L=2, D=2): mean (4, 3)
    center.update(x)
    torch.testing.assert_close(center.value, torch.tensor([[[2.0, 1.5]]]))
    assert center(x).shape == x.shape


def test_momentum_extremes_and_errors():
    frozen, follow = Center((1, 2), momentum=1.0), Center((1, 2), momentum=0.0)
    batch = torch.tensor([[4.0, -2.0]])
    frozen.update(batch)
    follow.update(batch)
    assert torch.equal(frozen.value, torch.zeros(1, 2)) and torch.equal(follow.value, batch)
    assert "value" in frozen.state_dict()  # a buffer: saved and restored with the model
    with pytest.raises(ValueError, match="feature size"):
        follow.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="shape"):
        Center((2, 4))
    with pytest.raises(ValueError, match="momentum"):
        Center((1, 4), momentum=1.5)


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        center = Center((1, 2), momentum=0.0)
        center.update(torch.full((3, 2), float(rank * 2)))  # rank means 0 and 2 → global mean 1
        queue.put((rank, center.value.tolist()))
    finally:
        dist.destroy_process_group()


def test_update_is_averaged_over_processes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results == {0: [[1.0, 1.0]], 1: [[1.0, 1.0]]}
