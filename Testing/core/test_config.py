"""Config: YAML presets and key=value overrides with type coercion and clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from S2DCCore.config import PreprocessConfig, RuntimeConfig, apply_overrides, load_config, to_dict
from S2DCCore.errors import UsageError


@dataclasses.dataclass(frozen=True)
class _Nested:
    preprocess: PreprocessConfig = PreprocessConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    lr: float = 1e-4
    name: str = "x"


def test_overrides_coerce_types():
    cfg = apply_overrides(_Nested(), ["lr=1e-3", "runtime.seed=7", "preprocess.spacing=2,2,3",
                                      "preprocess.ct_window=[-100, 300]", "runtime.threads=null",
                                      "preprocess.crop_foreground=false", "name=abc"])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.runtime.seed == 7 and cfg.runtime.threads is None
    assert cfg.preprocess.spacing == (2.0, 2.0, 3.0)
    assert cfg.preprocess.ct_window == (-100.0, 300.0)
    assert cfg.preprocess.crop_foreground is False and cfg.name == "abc"


@pytest.mark.parametrize("override, message", [
    ("nope=1", "unknown config key 'nope'"),
    ("runtime.nope=1", "unknown config key 'runtime.nope'"),
    ("runtime.seed=abc", "is not a valid int"),
    ("preprocess.spacing=1,2", "needs 3 values"),
    ("preprocess.preset=pet", "must be one of ct, mr, percentile"),
    ("lr", "is not key=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(UsageError, match=message):
        apply_overrides(_Nested(), [override])


def test_yaml_preset_file_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("lr: 0.01\nruntime:\n  device: cpu\n")
    cfg = load_config(_Nested, preset, ["runtime.seed=3"])
    assert cfg.lr == 0.01 and cfg.runtime.device == "cpu" and cfg.runtime.seed == 3
    assert cfg.preprocess == PreprocessConfig()  # untouched sections keep their defaults
    assert to_dict(cfg)["preprocess"]["spacing"] == [1.5, 1.5, 1.5]


def test_unknown_preset_lists_bundled():
    with pytest.raises(UsageError, match="no preset 'does-not-exist'"):
        load_config(_Nested, "does-not-exist")
