"""Model directories for inference: strict loading, clear refusals, no torch before it is needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from S2DCCore.errors import DataError
from S2DCCore.inference.model_io import DEFAULT_ROI, SEGMENTER_EMBED_STAGE, LoadedModel, check_model_dir, load_model


def test_both_kinds_load_with_their_card_defaults(loaded_models):
    import torch

    segmenter, encoder = loaded_models["segmenter"], loaded_models["encoder"]
    assert segmenter.kind == "segmenter" and segmenter.labels == {0: "background", 1: "liver", 2: "spleen"}
    assert segmenter.roi == (64, 64, 64) and segmenter.embed_stage == SEGMENTER_EMBED_STAGE
    assert encoder.kind == "encoder" and encoder.embed_stage == 1 and encoder.roi == DEFAULT_ROI
    assert segmenter.spacing == (2.0, 2.0, 2.0) and encoder.preprocess.preset == "ct"
    x = torch.zeros(1, 1, 32, 32, 32)
    with torch.no_grad():
        # A segmenter's encoder is its swinViT: the same stages as a SwinEncoder.
        assert [f.shape[1] for f in segmenter.encoder(x)] == [12, 24, 48, 96, 192]
        assert [tuple(f.shape[2:]) for f in encoder.encoder(x)] == [(16,) * 3, (8,) * 3, (4,) * 3, (2,) * 3, (1,) * 3]


def _copy(model_dirs, tmp_path, kind="segmenter"):
    target = tmp_path / kind
    shutil.copytree(model_dirs[kind], target)
    return target, json.loads((target / "model.json").read_text())


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path, model_dirs):
    path, card = _copy(model_dirs, tmp_path)
    card["architecture"]["out_channels"] = 4
    card["labels"]["3"] = "kidney"
    (path / "model.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match=r"model.safetensors: weights do not match the architecture"):
        load_model(path)


@pytest.mark.parametrize("change, message", [
    ({"kind": "optimizer"}, "cannot be used for inference"),
    ({"format_version": 7}, "unsupported format_version 7"),
    ({"architecture": None}, "no 'architecture' object"),
])
def test_bad_cards_are_refused_without_torch(tmp_path, model_dirs, change, message):
    path, card = _copy(model_dirs, tmp_path, "encoder")
    (path / "model.json").write_text(json.dumps({**card, **change}))
    with pytest.raises(DataError, match=message):
        check_model_dir(path)


def test_bad_architecture_values_are_data_errors(tmp_path, model_dirs):
    path, card = _copy(model_dirs, tmp_path, "encoder")
    card["architecture"]["feature_size"] = "twelve"
    (path / "model.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="bad architecture in the model card"):
        load_model(path)


def test_validation_and_package_import_do_not_import_torch(model_dirs):
    code = ("import sys, S2DCCore; from S2DCCore.inference.model_io import check_model_dir; "
            f"check_model_dir({str(model_dirs['encoder'])!r}); segment = S2DCCore.segment; embed = S2DCCore.embed; "
            "print('torch' in sys.modules, 'monai' in sys.modules, 'segment' in dir(S2DCCore))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr


def test_an_in_memory_model_needs_only_a_card():
    model = LoadedModel(card={"kind": "segmenter", "labels": {"0": "a", "1": "b"}}, segmenter=lambda x: x)
    assert model.roi == DEFAULT_ROI and model.spacing == (1.5, 1.5, 1.5) and model.orientation == "RAS"
    assert model.feature_size is None and model.window(40) == (40, 40, 40)
