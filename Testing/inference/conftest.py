"""Inference fixtures: tiny random-weight model directories, network-free predictors, a CLI runner.

The network-free predictors make geometry testable: a segmenter returning one-hot logits of
"normalised intensity > 0.5" and an encoder returning block means of the intensity, so the expected
outputs are known exactly on the input grid.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Test volumes are a cone f(x) = RADIUS − |x − centre| (mm) around an off-centre point, so the
# "intensity > 0" region is a ball and any flip, shift or axis swap of the output shows up.
RADIUS_MM = 10.0
CT_WINDOW = (-50.0, 50.0)  # maps f to [0, 1]; f = 0 (the ball's surface) becomes 0.5
MODEL_SPACING = (1.5, 1.5, 1.5)
SHAPE = (40, 36, 32)

# Runs the CLI whether or not S2DCCore.cli.main registers the inference commands yet.
_SHIM = ("import sys; from S2DCCore.cli import main as m, infer_commands as ic; "
         "m.COMMAND_MODULES = m.COMMAND_MODULES if ic in m.COMMAND_MODULES else m.COMMAND_MODULES + (ic,); "
         "sys.exit(m.main(sys.argv[1:]))")


def infer_commands_registered() -> bool:
    from S2DCCore.cli import main

    return any(module.__name__.endswith("infer_commands") for module in main.COMMAND_MODULES)


def cli_command(*args) -> list[str]:
    """The ``s2dc`` command line as a real subprocess (``-m S2DCCore.cli.main`` once registered)."""
    head = ["-m", "S2DCCore.cli.main"] if infer_commands_registered() else ["-c", _SHIM]
    return [sys.executable, *head, *map(str, args)]


def run_cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=cwd, timeout=300)


def run_main(*args) -> int:
    """The CLI in this process (for happy paths: no second torch import)."""
    from S2DCCore.cli import infer_commands, main

    modules = main.COMMAND_MODULES
    if infer_commands not in modules:
        main.COMMAND_MODULES = modules + (infer_commands,)
    try:
        return main.main([str(a) for a in args])
    finally:
        main.COMMAND_MODULES = modules


def voxel_centres(shape, affine) -> np.ndarray:
    """(X, Y, Z, 3) RAS coordinates of every voxel centre."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def cone_volume(affine, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(f on the grid (float32), the ball's centre in RAS)."""
    ras = voxel_centres(shape, affine)
    centre = ras.reshape(-1, 3).mean(axis=0) + np.array([3.0, -2.0, 1.5])
    return (RADIUS_MM - np.linalg.norm(ras - centre, axis=-1)).astype(np.float32), centre


def threshold_card(kind: str = "segmenter") -> dict:
    card = {"kind": kind, "roi": [32, 32, 32], "spacing": list(MODEL_SPACING), "orientation": "RAS",
            "preprocess": {"preset": "ct", "ct_window": list(CT_WINDOW)}}
    if kind == "segmenter":
        card["labels"] = {"0": "background", "1": "ball"}
    else:
        card.update(token_stage=1, architecture={"patch_size": 2})
    return card


@pytest.fixture
def threshold_segmenter():
    """In-memory segmenter: one-hot logits of normalised intensity > 0.5."""
    import torch

    from S2DCCore.inference.model_io import LoadedModel

    def predict(x):
        inside = (x > 0.5).float()
        return torch.cat([1.0 - inside, inside], dim=1)

    return LoadedModel(card=threshold_card("segmenter"), segmenter=predict)


@pytest.fixture
def mean_encoder():
    """In-memory encoder: stage s = block means (stride 2^(s+1)) of (x, 1 − x)."""
    import torch
    import torch.nn.functional as F

    from S2DCCore.inference.model_io import LoadedModel

    def forward_features(x):
        both = torch.cat([x, 1.0 - x], dim=1)
        return [F.avg_pool3d(both, 2 ** (s + 1)) for s in range(5)]

    return LoadedModel(card=threshold_card("encoder"), encoder=forward_features)


def _tiny_encoder_config():
    from S2DCCore.models.encoders import EncoderConfig

    return EncoderConfig(feature_size=12)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Random-weight tiny model directories in the fixed formats: ``segmenter`` and ``encoder``."""
    import torch

    from S2DCCore.checkpoint import save_model_dir
    from S2DCCore.config import PreprocessConfig, to_dict
    from S2DCCore.models.encoders import SwinEncoder
    from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    encoder = _tiny_encoder_config()
    preprocess = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    network = build_segmenter(SegmenterConfig(encoder=encoder, out_channels=3))
    save_model_dir(root / "segmenter", network.state_dict(), {
        "kind": "segmenter", "architecture": {"encoder": to_dict(encoder), "out_channels": 3, "norm_name": "instance"},
        "labels": {"0": "background", "1": "liver", "2": "spleen"}, "preprocess": to_dict(preprocess),
        "spacing": [2.0, 2.0, 2.0], "orientation": "RAS", "intensity_preset": "ct", "roi": [64, 64, 64],
        "encoder_provenance": None, "validation_dice": None})
    save_model_dir(root / "encoder", SwinEncoder(encoder).state_dict(), {
        "kind": "encoder", "method": "s2dc", "architecture": to_dict(encoder), "token_stage": 1,
        "preprocess": to_dict(preprocess), "intensity_preset": "ct", "spacing": [2.0, 2.0, 2.0],
        "orientation": "RAS", "step": 1})
    return {"segmenter": root / "segmenter", "encoder": root / "encoder"}


@pytest.fixture(scope="session")
def helpers():
    """The helpers above for test modules (which cannot import this conftest under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(run_cli=run_cli, run_main=run_main, cli_command=cli_command, cone_volume=cone_volume,
                           voxel_centres=voxel_centres, radius=RADIUS_MM, model_spacing=MODEL_SPACING, shape=SHAPE,
                           ct_window=CT_WINDOW)


@pytest.fixture(scope="session")
def loaded_models(model_dirs) -> dict:
    """`model_dirs` loaded once (tests of the directory path itself use `model_dirs`)."""
    from S2DCCore.inference.model_io import load_model

    return {name: load_model(path) for name, path in model_dirs.items()}
