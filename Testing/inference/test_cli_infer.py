"""``s2dc segment / embed / propagate`` on the command line.

Bad input runs as real subprocesses (all cases in parallel, so the set stays fast): exit code 1, exactly one
line on stderr naming the file and the problem, and no output written. Nothing is unpickled: a pickle
"model" is a file that would create a marker file if it were ever loaded. Happy paths run ``main()`` in
this process (one torch import for the whole module).
"""

from __future__ import annotations

import json
import pickle
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from S2DCCore.io.image import write_image

ALL_CASES = ("missing image", "corrupt image", "2-D image", "4-D image", "NaN image", "missing weights",
             "missing card", "corrupt card", "truncated weights", "pickle model", "no model")
# embed shares segment's validation (read_input, check_model_dir); one case of each kind runs through it too.
EMBED_CASES = ("missing image", "4-D image", "NaN image", "truncated weights", "pickle model")


class _Bomb:
    """Unpickling this creates ``path`` (proof that something ran pickle.load)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _bad_inputs(root, model_dirs):
    """name → (image, model, the expected error fragment)."""
    import shutil

    good = write_image(root / "good.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    write_image(root / "flat.nii.gz", np.zeros((8, 8), np.float32), np.eye(4))
    write_image(root / "four.nii.gz", np.zeros((8, 8, 8, 2), np.float32), np.eye(4))
    nan = np.zeros((8, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    write_image(root / "nan.nii.gz", nan, np.eye(4))
    (root / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08garbage")
    models = {}
    for name in ("no_weights", "no_card", "bad_json", "bad_weights"):
        models[name] = root / name
        shutil.copytree(model_dirs["segmenter"], models[name])
    (models["no_weights"] / "model.safetensors").unlink()
    (models["no_card"] / "model.json").unlink()
    (models["bad_json"] / "model.json").write_text("{not json")
    weights = (models["bad_weights"] / "model.safetensors").read_bytes()
    (models["bad_weights"] / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with open(root / "model.pt", "wb") as handle:
        pickle.dump(_Bomb(str(root / "UNPICKLED")), handle)
    seg = model_dirs["segmenter"]
    return {
        "missing image": (root / "absent.nii.gz", seg, "absent.nii.gz: no such file or folder"),
        "corrupt image": (root / "corrupt.nii.gz", seg, "corrupt.nii.gz: "),
        "2-D image": (root / "flat.nii.gz", seg, "flat.nii.gz: 2-D image"),
        "4-D image": (root / "four.nii.gz", seg, "four.nii.gz: 4-D image"),
        "NaN image": (root / "nan.nii.gz", seg, "nan.nii.gz: 1 of 512 voxels are NaN or infinite"),
        "missing weights": (good, models["no_weights"], "model.safetensors: missing file"),
        "missing card": (good, models["no_card"], "model.json: missing file"),
        "corrupt card": (good, models["bad_json"], "model.json: corrupt JSON"),
        "truncated weights": (good, models["bad_weights"], "model.safetensors: corrupt safetensors file"),
        "pickle model": (good, root / "model.pt", "model.pt: pickle files are never loaded"),
        "no model": (good, root / "nowhere", "nowhere: no such model directory"),
    }


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, model_dirs, helpers):
    """Every (command, case) run once, in parallel: → (CompletedProcess, case, output path, root)."""
    root = tmp_path_factory.mktemp("bad")
    cases = _bad_inputs(root, model_dirs)
    jobs = {}
    for command in ("segment", "embed"):
        for name, (image, model, _) in cases.items():
            if command == "embed" and name not in EMBED_CASES:
                continue
            folder = root / "out" / f"{command}-{name.replace(' ', '_')}"
            out = folder / ("seg.nii.gz" if command == "segment" else "emb")
            args = [command, image, "--model", model, "-o", out] + (["--pca"] if command == "embed" else [])
            jobs[(command, name)] = (args, out)

    def run(args):
        return subprocess.run(helpers.cli_command(*args), capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(run, args) for key, (args, _) in jobs.items()}
    return {key: (futures[key].result(), cases[key[1]], jobs[key][1], root) for key in jobs}


@pytest.mark.parametrize("command, case", [("segment", case) for case in ALL_CASES] +
                         [("embed", case) for case in EMBED_CASES])
def test_bad_input_is_one_line_and_writes_nothing(bad_runs, command, case):
    result, (_, _, expected), out, root = bad_runs[(command, case)]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"s2dc {command}: error: "), result.stderr
    assert expected in lines[0]
    assert not out.exists() and not out.parent.exists()
    assert not (root / "UNPICKLED").exists()


@pytest.fixture
def small_image(tmp_path, helpers):
    affine = np.diag([-1.2, -1.2, 1.5, 1.0])
    f, centre = helpers.cone_volume(affine, shape=(30, 28, 20))
    return write_image(tmp_path / "ct.nrrd", f * 20, affine), affine, f.shape, centre


def test_segment_command_writes_labels_sidecar_and_preview(tmp_path, model_dirs, small_image, helpers, capsys):
    from S2DCCore.io.image import read_image

    image, affine, shape, _ = small_image
    out = tmp_path / "result" / "seg.nii.gz"
    assert helpers.run_main("segment", image, "--model", model_dirs["segmenter"], "-o", out, "--device", "cpu",
                            "--preview") == 0
    back = read_image(out)
    assert back.shape == shape
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    names = [entry["name"] for entry in json.loads((tmp_path / "result" / "seg.json").read_text())["labels"]]
    assert names == ["background", "liver", "spleen"]
    assert (tmp_path / "result" / "seg.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out
    # A second run refuses to overwrite before doing any work.
    assert helpers.run_main("segment", image, "--model", model_dirs["segmenter"], "-o", out) == 2


def test_embed_command_writes_every_overlay(tmp_path, model_dirs, small_image, helpers):
    image, affine, shape, centre = small_image
    out = tmp_path / "emb"
    point = ",".join(f"{v:.2f}" for v in centre)
    assert helpers.run_main("embed", image, "--model", model_dirs["encoder"], "-o", out, "--pca", "--clusters", "3",
                            f"--point={point}", "--roi", "32", "--preview") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "embeddings.npz", "embedding.json", "pca_rgb.nii.gz", "structures.nii.gz", "structures.json",
        "similarity.nii.gz", "preview_pca.png", "preview_structures.png", "preview_similarity.png"])


def test_propagate_command(tmp_path, model_dirs, small_image, helpers):
    from S2DCCore.io.image import read_image

    image, affine, shape, _ = small_image
    marks = np.zeros(shape, np.uint8)
    marks[2, 2, 2:5], marks[15, 14, 9:12] = 1, 4
    scribbles = write_image(tmp_path / "scribbles.nrrd", marks, affine)
    out = tmp_path / "prop.seg.nrrd"
    assert helpers.run_main("propagate", image, "--model", model_dirs["encoder"], "--scribbles", scribbles, "-o", out,
                            "--roi", "32", "--method", "linear") == 0
    back = read_image(out)
    assert back.shape == shape and set(np.unique(back.array)) <= {1, 4}
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    assert json.loads((tmp_path / "prop.json").read_text())["scribbled_voxels"] == {"1": 3, "4": 3}


def test_memory_budget_refusal_is_one_line_and_writes_nothing(tmp_path, model_dirs, small_image, helpers, capsys):
    image = small_image[0]
    out = tmp_path / "seg.nii.gz"
    assert helpers.run_main("segment", image, "--model", model_dirs["segmenter"], "-o", out,
                            "--memory-budget", "1M") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "but the budget is 1.0 MiB (--memory-budget)" in lines[0] and str(image) in lines[0]
    assert not out.exists() and not (tmp_path / "seg.json").exists()


def test_usage_errors(tmp_path, model_dirs, small_image, helpers, capsys):
    image = small_image[0]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("")
    assert helpers.run_main("embed", image, "--model", model_dirs["encoder"], "-o", tmp_path / "full") == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        helpers.run_main("embed", image, "--model", model_dirs["encoder"], "-o", tmp_path / "e", "--point", "1,2")
    assert exit_info.value.code == 2
    assert helpers.run_main("segment", image, "--model", model_dirs["segmenter"], "-o", tmp_path / "s.nii.gz",
                            "--memory-budget", "lots") == 2
