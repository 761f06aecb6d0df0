"""The checkpoint swap after a kill at each point: the last good copy is always loadable and is never
deleted before the new one is in place."""

from __future__ import annotations

import shutil

import pytest
import torch

from S2DCCore.checkpoint import load_model_dir, load_state, save_model_dir, save_state
from S2DCCore.utils.disk import StorageError


def test_a_kill_mid_swap_leaves_old_which_the_next_save_restores_first(tmp_path):
    path = tmp_path / "last"
    save_state(path, {"step": 1, "w": torch.ones(3)})
    path.rename(tmp_path / "last.old")  # what a SIGKILL between the two renames leaves
    assert load_state(path)["step"] == 1
    save_state(path, {"step": 2, "w": torch.zeros(3)})
    assert load_state(path)["step"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_readers_of_a_model_folder_use_old_while_it_is_missing(tmp_path):
    save_model_dir(tmp_path / "model", {"w": torch.ones(2)}, {"kind": "encoder"})
    shutil.move(tmp_path / "model", tmp_path / "model.old")
    tensors, card = load_model_dir(tmp_path / "model")
    assert card["kind"] == "encoder" and torch.equal(tensors["w"], torch.ones(2))


def test_enospc_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from S2DCCore.utils import faults

    path = tmp_path / "last"
    save_state(path, {"step": 1, "w": torch.ones(1000)})
    monkeypatch.setenv(faults.ENV, "checkpoint.write=ENOSPC")
    faults.reset_fault_counts()
    with pytest.raises(StorageError, match=r"cannot write the training checkpoint: no space left .*needs 4.0 KB"):
        save_state(path, {"step": 2, "w": torch.zeros(1000)})
    assert load_state(path)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last"]
