"""Model cards and the recent-models list, dependency bookkeeping and terminology tags (pure Python)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from S2DCExtensionLib import Dependencies, ModelCards, Terminology

ROOT = Path(__file__).resolve().parents[2]


def _model(folder: Path, card) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(card if isinstance(card, str) else json.dumps(card))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_card_summary_shows_labels_spacing_method_and_dice(tmp_path):
    card = {"kind": "segmenter", "labels": {"0": "background", "2": "spleen", "1": "liver"},
            "spacing": [1.5, 1.5, 2.0], "orientation": "RAS", "intensity_preset": "ct",
            "encoder_provenance": {"method": "s2dc"}, "validation_mean_dice": 0.8123,
            "validation_dice": {"liver": 0.9, "spleen": 0.7246}, "step": 150, "trained_on": "/data/c"}
    text = ModelCards.cardSummary(ModelCards.readCard(_model(tmp_path / "m", card)))
    assert "Kind: segmenter" in text and "Pretraining method: s2dc" in text
    assert "Labels: 1 liver, 2 spleen" in text and "Spacing: 1.5 × 1.5 × 2 mm" in text
    assert "Validation Dice: 0.812 (mean)" in text and "spleen 0.725" in text and "step 150" in text
    encoder = ModelCards.cardSummary({"kind": "encoder", "method": "s2dc", "spacing": None})
    assert "Spacing: native" in encoder and "Labels" not in encoder


def test_read_card_errors_name_the_file(tmp_path):
    with pytest.raises(ModelCards.ModelCardError, match="not a folder"):
        ModelCards.readCard(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.json").write_text("{}")
    with pytest.raises(ModelCards.ModelCardError, match="model.safetensors: missing"):
        ModelCards.readCard(tmp_path / "half")
    with pytest.raises(ModelCards.ModelCardError, match="unreadable"):
        ModelCards.readCard(_model(tmp_path / "bad", "{oops"))
    with pytest.raises(ModelCards.ModelCardError, match="JSON object"):
        ModelCards.readCard(_model(tmp_path / "list", "[1]"))


def test_recent_models_list_moves_to_front_dedupes_and_caps():
    recent = ["/a", "/b", "/c"]
    assert ModelCards.updateRecent(recent, "/b") == ["/b", "/a", "/c"]
    assert ModelCards.updateRecent(recent, "/d/", limit=3) == ["/d", "/a", "/b"]
    assert ModelCards.updateRecent(["/a/./x", "/a/x"], "/n") == ["/n", "/a/x"]
    assert ModelCards.existingRecent(["/a", "", "/b"], isDir=lambda p: p == "/b") == ["/b"]


def test_requirement_helpers():
    assert Dependencies.requirementName("PyYAML>=6.0") == "pyyaml"
    assert Dependencies.requirementName("scikit_image[data]>=0.2") == "scikit-image"
    assert Dependencies.versionTuple("2.13.0+cpu") == (2, 13, 0)
    assert Dependencies.satisfiesMinimum("2.13.0+cpu", ">=2.2") and not Dependencies.satisfiesMinimum("2.1.9", ">=2.2")
    installed = {"monai": "1.6.1", "pot": "0.9.1"}
    assert Dependencies.missingRequirements(["monai>=1.4", "pot>=0.9.4", "einops>=0.6"], installed.get) == \
        ["pot>=0.9.4", "einops>=0.6"]


def test_the_bundled_core_is_found_in_a_source_checkout_with_its_version(tmp_path):
    import S2DCCore

    source = Dependencies.findCoreSource()
    assert source == ROOT and Dependencies.coreVersion(source) == S2DCCore.__version__
    bundled = tmp_path / "modules" / Dependencies.BUNDLED_CORE
    (bundled / "S2DCCore").mkdir(parents=True)
    (bundled / "S2DCCore" / "__init__.py").write_text('__version__ = "9.1.0"\n')
    assert Dependencies.findCoreSource(tmp_path / "modules") == bundled
    assert Dependencies.coreVersion(bundled) == "9.1.0"
    assert Dependencies.findCoreSource(tmp_path / "elsewhere" / "x") is None


def test_terminology_entries_have_seven_parts_and_known_codes():
    liver = Terminology.terminologyEntry("Liver").split("~")
    assert len(liver) == 7 and liver[0] == "Segmentation category and type - 3D Slicer General Anatomy list"
    assert liver[1] == "SCT^123037004^Anatomical Structure" and liver[2] == "SCT^10200004^Liver" and liver[3] == "^^"
    kidney = Terminology.terminologyEntry("kidney_left").split("~")
    assert kidney[2] == "SCT^64033007^Kidney" and kidney[3] == "SCT^7771000^Left"
    assert Terminology.terminologyEntry("Right lung").split("~")[3] == "SCT^24028007^Right"
    other = Terminology.terminologyEntry("structure 3").split("~")
    assert other[1] == other[2] == "SCT^85756007^Tissue" and other[3] == "^^"
    assert Terminology.splitLaterality("left") == ("left", None)  # a side alone is not a modifier
