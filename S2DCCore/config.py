"""Typed configuration: frozen dataclasses, YAML presets and ``key=value`` overrides.

One mechanism serves every command: a config is a (nested) frozen dataclass whose field names equal
the keyword arguments they feed; `load_config` starts from the dataclass defaults, merges a YAML
preset (a bundled name such as ``tiny`` or a file path), then ``key=value`` overrides
(``optim.lr=1e-3``), and `to_dict` gives the resolved config that runs save beside their outputs.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from S2DCCore.errors import UsageError

C = TypeVar("C")
PRESET_DIR = Path(__file__).parent / "configs"


INTENSITY_PRESETS = ("ct", "mr", "percentile")
# Percentiles the ``percentile`` preset maps to 0 and 1.
PERCENTILES = (0.5, 99.5)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How a volume becomes network input (MONAI transforms, see `S2DCCore.data.transforms`).

    Attributes:
        preset: ``ct`` (HU window to [0, 1]), ``mr`` (z-score inside the foreground) or ``percentile``
            (the volume's 0.5–99.5 percentiles to [0, 1], clipped: any modality; the default encoder's).
        ct_window: (low, high) HU for the ``ct`` preset; the default is the abdominal soft-tissue
            window used by the official S²DC fine-tuning code (−175..250).
        spacing: target voxel spacing in mm, or None to keep each file's spacing.
        orientation: axis codes every volume is reoriented to.
        crop_foreground: crop to the bounding box of the body before training.
    """

    preset: str = "ct"
    ct_window: tuple[float, float] = (-175.0, 250.0)
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)
    orientation: str = "RAS"
    crop_foreground: bool = True

    def __post_init__(self) -> None:
        if self.preset not in INTENSITY_PRESETS:
            raise UsageError(f"preprocess.preset must be one of {', '.join(INTENSITY_PRESETS)}, not {self.preset!r}")
        if self.ct_window[0] >= self.ct_window[1]:
            raise UsageError(f"preprocess.ct_window must be (low, high) with low < high, not {self.ct_window}")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how reproducibly to run; resolved once at the entry point.

    Attributes:
        device: ``auto`` (cuda → mps → cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        seed: base seed; each distributed rank adds its rank.
        threads: CPU threads for torch (None = torch's default).
        deterministic: ask torch for deterministic kernels (slower on CUDA; also turns off cuDNN
            autotuning and TF32).
        tf32: on CUDA, let fp32 matrix products and convolutions use TF32 (Ampere and newer; ~10-bit
            mantissa). The OT's matrix products always stay in full fp32.
    """

    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    deterministic: bool = False
    tf32: bool = True


def to_dict(config: Any) -> dict:
    """A plain, JSON/YAML-serialisable dict of a (nested) config dataclass."""
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return convert(config)


def from_dict(cls: type[C], values: dict, *, where: str = "") -> C:
    """Build ``cls`` from a nested dict, coercing values to the annotated field types.

    Raises:
        UsageError: an unknown key or a value that does not fit its field.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"unknown config key {where}{unknown[0]!r}; known: {', '.join(sorted(names))}")
    kwargs = {key: _coerce(hints[key], value, f"{where}{key}") for key, value in values.items()}
    return cls(**kwargs)


def apply_overrides(config: C, overrides: list[str] | tuple[str, ...]) -> C:
    """Return ``config`` with ``dotted.key=value`` overrides applied (values parsed as YAML)."""
    import yaml

    values = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise UsageError(f"unknown config key {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise UsageError(f"unknown config key {key!r}; known here: {', '.join(sorted(node))}")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return from_dict(type(config), values)


def load_config(cls: type[C], preset: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                section: str | None = None) -> C:
    """Defaults of ``cls`` ← YAML ``preset`` (bundled name or path; its ``section`` if given) ← ``overrides``."""
    import yaml

    config = cls()
    if preset:
        path = Path(preset)
        if not path.suffix:
            path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            bundled = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
            raise UsageError(f"no preset {str(preset)!r} (bundled presets: {bundled or 'none'})")
        values = yaml.safe_load(path.read_text()) or {}
        if section is not None:
            values = values.get(section) or {}
        merged = _merge(to_dict(config), values)
        config = from_dict(cls, merged)
    return apply_overrides(config, overrides)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        errors = []
        for arg in candidates:
            try:
                return _coerce(arg, value, key)
            except UsageError as exc:
                errors.append(exc)
        if len(errors) == 1:  # Optional[X]: X's own message is the useful one
            raise errors[0]
        raise UsageError(f"config {key}={value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise UsageError(f"config {key} must be a mapping")
        return from_dict(tp, value, where=f"{key}.")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value] * (len(args) if args and args[-1] is not Ellipsis else 1)
        if args and args[-1] is not Ellipsis and len(value) != len(args):
            raise UsageError(f"config {key} needs {len(args)} values, got {len(value)}")
        item_types = [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args)
        return tuple(_coerce(t, v, key) for t, v in zip(item_types, value))
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
    except (TypeError, ValueError):
        raise UsageError(f"config {key}={value!r} is not a valid {tp.__name__}") from None
    return value
