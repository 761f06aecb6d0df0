"""FeatureQueue (FIFO, wrap-around, state_dict) and the guarded distributed helpers it uses."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from S2DCCore.losses.queue import FeatureQueue
from S2DCCore.utils import distributed


def _rows(start: int, count: int, dim: int = 3) -> torch.Tensor:
    """Keys whose every entry is their id, so positions in the queue are easy to read."""
    return torch.arange(start, start + count, dtype=torch.float32)[:, None].expand(count, dim).clone()


def test_queue__starts_with_normalised_random_rows():
    torch.manual_seed(0)
    queue = FeatureQueue(6, 4)
    assert queue.queue.shape == (6, 4) and int(queue.ptr) == 0
    torch.testing.assert_close(queue.queue.norm(dim=1), torch.ones(6))
    assert not torch.allclose(queue.queue[0], queue.queue[1])


def test_queue__fifo_wraps_around():
    queue = FeatureQueue(5, 3)
    initial = queue.features()
    queue.enqueue(_rows(0, 3))
    assert queue.queue[:3, 0].tolist() == [0, 1, 2] and int(queue.ptr) == 3
    torch.testing.assert_close(queue.queue[3:], initial[3:])  # untouched rows keep their init
    queue.enqueue(_rows(3, 3))  # rows 3, 4, then wraps to 0
    assert queue.queue[:, 0].tolist() == [5, 1, 2, 3, 4] and int(queue.ptr) == 1


def test_queue__more_keys_than_size_equals_one_by_one_writes():
    bulk, single = FeatureQueue(4, 3), FeatureQueue(4, 3)
    bulk.enqueue(_rows(0, 2))
    single.enqueue(_rows(0, 2))
    bulk.enqueue(_rows(2, 7))
    for i in range(2, 9):
        single.enqueue(_rows(i, 1))
    assert torch.equal(bulk.queue, single.queue) and int(bulk.ptr) == int(single.ptr) == 1


def test_queue__normalize_flag_and_features_is_a_copy():
    raw, normalized = FeatureQueue(2, 2), FeatureQueue(2, 2, normalize=True)
    keys = torch.tensor([[3.0, 4.0]])
    raw.enqueue(keys)
    normalized.enqueue(keys)
    assert raw.queue[0].tolist() == [3.0, 4.0]  # official: keys are not normalised
    torch.testing.assert_close(normalized.queue[0], torch.tensor([0.6, 0.8]))
    snapshot = raw.features()
    raw.enqueue(torch.zeros(1, 2))
    assert snapshot[1].norm() == pytest.approx(1.0) and not snapshot.requires_grad


def test_queue__state_dict_round_trip_resumes_identically():
    queue = FeatureQueue(5, 3)
    queue.enqueue(_rows(0, 4))
    restored = FeatureQueue(5, 3)
    restored.load_state_dict(queue.state_dict())
    assert set(queue.state_dict()) == {"queue", "ptr"}
    assert torch.equal(restored.queue, queue.queue) and int(restored.ptr) == 4
    queue.enqueue(_rows(10, 2))
    restored.enqueue(_rows(10, 2))
    assert torch.equal(restored.queue, queue.queue) and int(restored.ptr) == int(queue.ptr) == 1


def test_queue__casts_keys_and_validates_shapes():
    queue = FeatureQueue(3, 2)
    queue.enqueue(torch.ones(1, 2, dtype=torch.bfloat16, requires_grad=True))
    assert queue.queue.dtype == torch.float32 and not queue.queue.requires_grad
    with pytest.raises(ValueError, match="keys"):
        queue.enqueue(torch.ones(2, 3))
    with pytest.raises(ValueError):
        FeatureQueue(-1, 2)
    empty = FeatureQueue(0, 2)
    empty.enqueue(torch.ones(2, 2))
    assert empty.features().shape == (0, 2) and int(empty.ptr) == 0


def test_distributed_helpers__without_process_group():
    assert not distributed.is_distributed()
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1 and distributed.is_main_process()
    x = torch.randn(3, 2)
    assert distributed.all_gather_cat(x) is x
    mean = distributed.all_reduce_mean(x)
    assert torch.equal(mean, x) and mean is not x


@pytest.fixture
def one_process_group(tmp_path):
    """A real gloo process group of one rank, so the distributed branches run."""
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_distributed_helpers__inside_one_process_group(one_process_group):
    assert distributed.is_distributed() and distributed.get_world_size() == 1 and distributed.is_main_process()
    x = torch.randn(3, 2)
    assert torch.equal(distributed.all_gather_cat(x), x)
    assert torch.equal(distributed.all_reduce_mean(x), x)
    queue = FeatureQueue(4, 2)
    queue.enqueue(_rows(0, 2, dim=2))
    assert queue.queue[:2, 0].tolist() == [0, 1]
