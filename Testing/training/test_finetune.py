"""Fine-tuning: from scratch and from a pretrained encoder (every weight loaded), resume, evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from S2DCCore.checkpoint import load_model_dir, save_model_dir
from S2DCCore.config import load_config
from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
from S2DCCore.errors import DataError
from S2DCCore.models.encoders import EncoderConfig, SwinEncoder
from S2DCCore.training.config import FinetuneConfig
from S2DCCore.training.finetune import finetune

TINY = ["runtime.device=cpu", "runtime.threads=1", "progress=none", "log_every=1", "val_cases=1"]


def tiny(*overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, "tiny", TINY + list(overrides), section="finetune")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("ph") / "ph", cases=3, seed=5, config=PhantomConfig(size=48))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    encoder = SwinEncoder(EncoderConfig(feature_size=12))
    card = {"kind": "encoder", "method": "s2dc", "architecture": {"feature_size": 12}, "step": 7}
    return save_model_dir(tmp_path_factory.mktemp("enc") / "encoder", encoder.state_dict(), card)


def test_finetune_from_encoder_loads_every_weight_and_writes_card(cohort, encoder_dir, tmp_path):
    model_dir = finetune(cohort, tmp_path / "run", tiny("steps=2", "val_every=2", "train_cases=2"), init=encoder_dir)
    tensors, card = load_model_dir(model_dir)
    encoder, _ = load_model_dir(encoder_dir)
    assert card["kind"] == "segmenter" and card["encoder_provenance"]["step"] == 7
    assert card["train_cases"] == ["case_000", "case_001"] and card["validation_cases"] == ["case_002"]
    assert len(card["labels"]) == 13 and card["labels"]["5"] == "liver"
    assert card["architecture"]["out_channels"] == 13 and card["roi"] == [64, 64, 64]
    assert len(card["spacing"]) == 3 and card["validation_mean_dice"] is not None
    assert set(card["validation_dice"]) >= {"liver", "spleen", "kidney_left"}
    # Every encoder tensor is in the segmenter (two steps moved them, so compare keys and shapes).
    for key, value in encoder.items():
        assert tensors[key].shape == value.shape
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and "val_mean_dice" in metrics[-1]
    # nnU-Net's post-processing decided on validation: the card's score is the post-processed one, never
    # below the raw argmax's, and names only structures (label values) whose Dice it raised.
    chosen = card["postprocess"]["largest_component"]
    assert set(chosen) <= {int(v) for v in card["labels"]} - {0}
    assert metrics[-1]["val_mean_dice"] >= metrics[-1]["val_mean_dice_raw"]
    assert (metrics[-1]["val_mean_dice"] > metrics[-1]["val_mean_dice_raw"]) == bool(chosen)


def test_encoder_weights_really_initialise_the_network(cohort, encoder_dir, tmp_path):
    # With lr 0 the network after training is exactly the initialisation: its encoder equals the checkpoint.
    model_dir = finetune(cohort, tmp_path / "run", tiny("steps=1", "optim.lr=0", "train_cases=1"), init=encoder_dir)
    tensors, _ = load_model_dir(model_dir)
    for key, value in load_model_dir(encoder_dir)[0].items():
        assert torch.equal(tensors[key], value), key


def test_wrong_encoder_fails_loudly(cohort, tmp_path):
    bigger = SwinEncoder(EncoderConfig(feature_size=24)).state_dict()
    bad = save_model_dir(tmp_path / "enc", {k: v for k, v in list(bigger.items())[:-2]},
                         {"kind": "encoder", "architecture": {"feature_size": 24}})
    with pytest.raises(DataError, match="not in the checkpoint"):
        finetune(cohort, tmp_path / "run", tiny("steps=1"), init=bad)


def test_cli_scratch_then_evaluate(cohort, tmp_path):
    run = tmp_path / "scratch"
    cmd = [sys.executable, "-m", "S2DCCore.cli.main"]
    result = subprocess.run(cmd + ["finetune", "--data", str(cohort), "--out", str(run), "--preset", "tiny",
                                   "--steps", "2", "--train-cases", "2", "--device", "cpu", "--progress", "none",
                                   "val_every=2", "val_cases=0", "runtime.threads=1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert load_model_dir(run / "model")[1]["encoder_provenance"] is None
    out = tmp_path / "eval" / "metrics.json"
    result = subprocess.run(cmd + ["evaluate", "--model", str(run / "model"), "--data", str(cohort), "-o", str(out),
                                   "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "heldout" and {c["case"] for c in metrics["cases"]} == {"case_002"}
    assert "liver" in metrics["summary"]["structures"] and "mean Dice" in result.stdout
    assert out.with_suffix(".csv").read_text().startswith("case,structure,value,dice,hd95_mm")
    assert out.with_suffix(".png").exists()
