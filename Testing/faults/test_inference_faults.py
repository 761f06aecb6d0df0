"""``segment``, ``embed`` and ``propagate`` under faults: SIGKILL while the output is being written, then a
rerun gives exactly the uninterrupted output and leaves no temporary file; a full disk, a read-only or
refused folder, and an input that disappears or changes are one line and leave no partial output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faultkit import one_line_error, run_killed
from S2DCCore.cli.main import main
from S2DCCore.io.image import read_image

RUNTIME = ["--device", "cpu"]


def segment_args(image, models, out):
    return ["segment", image, "--model", models["segmenter"], "-o", out, *RUNTIME]


def embed_args(image, models, out):
    return ["embed", image, "--model", models["encoder"], "-o", out, "--pca", "--clusters", "2", *RUNTIME]


def propagate_args(image, models, scribbles, out):
    return ["propagate", image, "--model", models["encoder"], "--scribbles", scribbles, "-o", out, *RUNTIME]


def run(args) -> int:
    return main([str(a) for a in args])


def folder_state(folder):
    """Every file under ``folder`` (names), to show nothing partial or temporary is there."""
    return sorted(p.name for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def image(cohort):
    return cohort / "imagesTr" / "case_000.nii.gz"


def same_labelmap(a, b):
    ia, ib = read_image(a), read_image(b)
    assert np.array_equal(ia.array, ib.array) and np.allclose(ia.affine, ib.affine)
    ja, jb = (json.loads(p.with_name(p.name.split(".")[0] + ".json").read_text()) for p in (a, b))
    assert ja["labels"] == jb["labels"]


@pytest.fixture(scope="module")
def segment_reference(image, models, tmp_path_factory):
    reference = tmp_path_factory.mktemp("ref") / "seg.nii.gz"
    assert run(segment_args(image, models, reference)) == 0
    return reference


@pytest.mark.parametrize("fault", ["image.write", "labelmap.commit"])
def test_segment_killed_while_writing_then_rerun(image, models, segment_reference, tmp_path, fault):
    reference = segment_reference
    out = tmp_path / "out" / "seg.nii.gz"
    run_killed(*segment_args(image, models, out), fault=fault)
    assert not out.exists()  # never a partial labelmap; at most an orphan sidecar or a temporary
    assert run(segment_args(image, models, out)) == 0
    same_labelmap(reference, out)
    assert folder_state(out.parent) == ["seg.json", "seg.nii.gz"]


def test_embed_killed_while_writing_then_rerun(image, models, tmp_path):
    reference = tmp_path / "ref"
    assert run(embed_args(image, models, reference)) == 0
    out = tmp_path / "out" / "emb"
    run_killed(*embed_args(image, models, out), fault="embed.write")
    assert not out.exists()
    assert run(embed_args(image, models, out)) == 0
    assert folder_state(out.parent) == ["emb", *folder_state(reference)]
    for name in ("pca_rgb.nii.gz", "structures.nii.gz"):
        assert np.array_equal(read_image(reference / name, validate=False).array,
                              read_image(out / name, validate=False).array)
    a, b = np.load(reference / "embeddings.npz"), np.load(out / "embeddings.npz")
    assert np.array_equal(a["features"], b["features"])


def test_propagate_killed_while_writing_then_rerun(image, models, scribbles, tmp_path):
    reference = tmp_path / "ref" / "p.nii.gz"
    assert run(propagate_args(image, models, scribbles, reference)) == 0
    out = tmp_path / "out" / "p.nii.gz"
    run_killed(*propagate_args(image, models, scribbles, out), fault="image.write")
    assert not out.exists()
    assert run(propagate_args(image, models, scribbles, out)) == 0
    same_labelmap(reference, out)
    assert folder_state(out.parent) == ["p.json", "p.nii.gz"]


@pytest.mark.parametrize("command, fault, words", [
    ("segment", "image.write=EROFS", "read-only"),
    ("embed", "embed.write=EACCES", "permission denied"),
    ("propagate", "image.write=ENOSPC", "no space left"),
])
def test_storage_failure_is_one_line_and_leaves_nothing(image, models, scribbles, tmp_path, monkeypatch, capsys,
                                                        command, fault, words):
    monkeypatch.setenv("S2DC_FAULT", fault)
    out = tmp_path / "out" / ("emb" if command == "embed" else "labels.nii.gz")
    args = {"segment": segment_args(image, models, out), "embed": embed_args(image, models, out),
            "propagate": propagate_args(image, models, scribbles, out)}[command]
    assert run(args) == 1
    line = one_line_error(capsys.readouterr().err, command)
    assert words in line and str(out.parent) in line and "needs" in line
    assert folder_state(tmp_path / "out") == []


def test_input_that_disappears_or_changes_is_one_line(image, models, tmp_path, capsys):
    gone = tmp_path / "gone.nii.gz"
    assert run(segment_args(gone, models, tmp_path / "a.nii.gz")) == 1
    assert str(gone) in one_line_error(capsys.readouterr().err, "segment")
    changed = tmp_path / "changed.nii.gz"
    changed.write_bytes(image.read_bytes()[:2000])  # the file was being replaced: truncated
    assert run(segment_args(changed, models, tmp_path / "b.nii.gz")) == 1
    assert str(changed) in one_line_error(capsys.readouterr().err, "segment")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changed.nii.gz"]
