"""Checkpoints: safetensors + JSON round trips, atomic swaps, refusal of pickles and corrupt files."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from S2DCCore.checkpoint import load_model_dir, load_state, save_model_dir, save_state
from S2DCCore.errors import DataError


def test_state_round_trip_keeps_types_and_tensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"step": 7, "optimizer": optimizer.state_dict(), "rng": {"torch": torch.get_rng_state(),
             "python": random.getstate(), "numpy": np.random.default_rng(3).bit_generator.state},
             "nested": {1: (1.5, None, "x")}}
    save_state(tmp_path / "last", state)
    back = load_state(tmp_path / "last")
    assert back["step"] == 7 and back["nested"] == {1: (1.5, None, "x")}
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    random.setstate(back["rng"]["python"])  # a real tuple again
    restored = torch.optim.AdamW(model.parameters())
    restored.load_state_dict(back["optimizer"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(restored.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key])


def test_interrupted_swap_falls_back_to_previous(tmp_path):
    save_state(tmp_path / "last", {"step": 1})
    # Simulate a kill between the two renames: only last.old exists.
    (tmp_path / "last").rename(tmp_path / "last.old")
    assert load_state(tmp_path / "last")["step"] == 1
    save_state(tmp_path / "last", {"step": 2})
    assert load_state(tmp_path / "last")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_model_dir_round_trip_and_card(tmp_path):
    tensors = {"a.weight": torch.randn(2, 3)}
    save_model_dir(tmp_path / "m", tensors, {"kind": "encoder"})
    back, card = load_model_dir(tmp_path / "m")
    assert torch.equal(back["a.weight"], tensors["a.weight"])
    assert card == {"format_version": 1, "kind": "encoder"}


def test_pickle_and_corrupt_models_are_refused(tmp_path):
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DataError, match="pickle files are never loaded"):
        load_model_dir(evil)
    save_model_dir(tmp_path / "m", {"w": torch.zeros(2)}, {"kind": "encoder"})
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt safetensors"):
        load_model_dir(tmp_path / "m")
    (tmp_path / "m" / "model.json").unlink()
    with pytest.raises(DataError, match="missing file"):
        load_model_dir(tmp_path / "m")
    save_model_dir(tmp_path / "v", {"w": torch.zeros(2)}, {"kind": "encoder"})
    (tmp_path / "v" / "model.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(DataError, match="unsupported format_version 99"):
        load_model_dir(tmp_path / "v")
