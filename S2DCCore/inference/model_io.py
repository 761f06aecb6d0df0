"""Models for inference: a model directory, or an in-memory network / callable with its card.

Two directory kinds (``model.safetensors`` + ``model.json``, see `S2DCCore.checkpoint`) are read:

* ``kind: "segmenter"``: a SwinUNETR-v2; ``architecture = {"encoder": {EncoderConfig}, "out_channels",
  "norm_name"}``, ``labels`` ({"0": "background", ...}) and ``roi`` (the sliding-window size);
* ``kind: "encoder"``: a `SwinEncoder` state dict; ``architecture`` = EncoderConfig fields and
  ``token_stage``, the stage whose tokens pretraining matched.

A segmenter also serves as an encoder (its ``swinViT`` is one). `check_model_dir` validates a
directory with no torch import (cheap, so the CLI fails fast on bad input); nothing is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from S2DCCore.checkpoint import MODEL_CARD, MODEL_WEIGHTS, read_model_card
from S2DCCore.config import PreprocessConfig, from_dict
from S2DCCore.errors import DataError, S2DCError, UsageError

KINDS = ("segmenter", "encoder")
# Stage used when a segmenter serves as an encoder: stride 8 (patch 2 × 2²), 4F channels. It keeps
# 8-voxel detail (12 mm at 1.5 mm spacing) while sitting past two patch-merging steps, and it is the
# tiny pretraining preset's token stage.
SEGMENTER_EMBED_STAGE = 2
# Sliding-window side when an encoder card names none (the paper's 96³ crops).
DEFAULT_ROI = (96, 96, 96)


@dataclass
class LoadedModel:
    """A model ready for inference.

    Attributes:
        card: the model card (see the module docstring); ``preprocess``, ``spacing``, ``orientation``,
            ``roi`` and (segmenters) ``labels`` are read from it.
        segmenter: (B, 1, X, Y, Z) → (B, K, X, Y, Z) logits, or None.
        encoder: (B, 1, X, Y, Z) → list of feature stages (``forward_features``), or None.
        module: the torch module behind the callables (moved to the inference device), or None.
        source: where it came from (a path, or ``<in-memory>``), used in messages.

    Examples:
        >>> threshold = LoadedModel(card={"kind": "segmenter", "labels": {"0": "bg", "1": "fg"}, "roi": [32] * 3},
        ...                         segmenter=lambda x: torch.cat([x <= 0.5, x > 0.5], 1).float())
    """

    card: dict
    segmenter: Callable | None = None
    encoder: Callable | None = None
    module: Any = None
    source: str = "<in-memory>"
    _preprocess: PreprocessConfig | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return str(self.card.get("kind", "segmenter" if self.segmenter is not None else "encoder"))

    @property
    def preprocess(self) -> PreprocessConfig:
        if self._preprocess is None:
            self._preprocess = _card_preprocess(self.card, self.source)
        return self._preprocess

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        spacing = self.card.get("spacing", self.preprocess.spacing)
        return None if spacing is None else tuple(float(s) for s in spacing)

    @property
    def orientation(self) -> str:
        return str(self.card.get("orientation", self.preprocess.orientation))

    @property
    def roi(self) -> tuple[int, int, int]:
        roi = self.card.get("roi") or DEFAULT_ROI
        roi = [int(roi)] * 3 if isinstance(roi, (int, float)) else [int(r) for r in roi]
        return tuple(roi)

    def window(self, roi=None) -> tuple[int, int, int]:
        """The sliding-window size: ``roi`` (an int or three) if given, else the card's.

        Raises:
            UsageError: a Swin network's window not made of multiples of 32 (its five stages halve it).
        """
        roi = self.roi if roi is None else roi
        window = tuple([int(roi)] * 3 if isinstance(roi, (int, float)) else [int(r) for r in roi])
        if len(window) != 3 or min(window) < 1:
            raise UsageError(f"window must be one or three positive sizes, not {roi}")
        if self.feature_size is not None and any(r % 32 for r in window):
            raise UsageError(f"window {window} must be made of multiples of 32 for a Swin network")
        return window

    def check_segmentation_window(self, window) -> None:
        """Refuse windows under 64 for a Swin segmenter with instance norm (it fails on a 1-voxel bottleneck).

        Raises:
            UsageError: naming the window.
        """
        arch = self.card.get("architecture") or {}
        instance_norm = arch.get("norm_name", "instance") == "instance" and arch.get("decoder", "swinunetr") == "swinunetr"
        if self.feature_size is not None and instance_norm and min(window) < 64:
            # The decoder's bottleneck is window/32 wide; instance norm needs more than one voxel there.
            raise UsageError(f"window {tuple(window)} is too small for this segmenter: its instance-normalised "
                             "bottleneck needs sides of at least 64")

    @property
    def labels(self) -> dict[int, str]:
        """Label value → name (segmenters). Output channel ``i`` is the ``i``-th smallest value, as
        fine-tuning maps a cohort's (possibly non-contiguous) values to channels."""
        labels = self.card.get("labels") or {}
        return {int(k): str(v) for k, v in labels.items()}

    @property
    def architecture(self) -> dict:
        arch = self.card.get("architecture") or {}
        return arch.get("encoder", arch) if self.kind == "segmenter" else arch

    @property
    def feature_size(self) -> int | None:
        value = self.architecture.get("feature_size")
        return None if value is None else int(value)

    @property
    def patch_size(self) -> int:
        return int(self.architecture.get("patch_size", 2))

    @property
    def embed_stage(self) -> int:
        """Default stage for embeddings: the card's ``token_stage`` (encoders) or `SEGMENTER_EMBED_STAGE`."""
        if self.kind == "encoder" and self.card.get("token_stage") is not None:
            return int(self.card["token_stage"])
        return SEGMENTER_EMBED_STAGE

    def to(self, device) -> LoadedModel:
        """Move the torch module (if any) to ``device``; returns self."""
        if self.module is not None:
            self.module.to(device)
        return self

    def n_parameters(self) -> int:
        if self.module is None:
            return 0
        return int(sum(p.numel() for p in self.module.parameters()))


DEFAULT_ENCODER = "default_encoder"


def default_model_dir() -> Path:
    """The encoder shipped inside S2DCCore (``S2DCCore/resources/default_encoder``; its card says how it was
    trained and `tools/train_default_encoder.sh` remakes it), used when no model is given.

    Raises:
        DataError: the package was installed without it.
    """
    path = Path(__file__).resolve().parents[1] / "resources" / DEFAULT_ENCODER
    if not (path / MODEL_CARD).is_file():
        raise DataError("the default encoder is missing from this installation (reinstall S2DCCore, or pass "
                        "--model)", path)
    return path


def as_model(model: str | Path | LoadedModel) -> LoadedModel:
    """``model`` itself, or the model directory it names loaded on the CPU."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model)
    raise UsageError(f"model must be a model directory or a LoadedModel, not {type(model).__name__}")


def check_model_dir(path: str | Path) -> dict:
    """Validate a model directory without importing torch; return its card.

    Refuses pickle files, missing or corrupt ``model.json``/``model.safetensors`` (its header and extent
    are checked), an unknown ``format_version`` or ``kind``.

    Raises:
        DataError: naming the file and the problem.
    """
    from safetensors import safe_open

    path = Path(path)
    card = read_model_card(path)
    card_path = path / MODEL_CARD
    if card.get("kind") not in KINDS:
        raise DataError(f"model kind {card.get('kind')!r} cannot be used for inference; expected one of "
                        f"{', '.join(KINDS)}", card_path)
    if not isinstance(card.get("architecture"), dict):
        raise DataError("no 'architecture' object in the model card", card_path)
    weights = path / MODEL_WEIGHTS
    if not weights.is_file():
        raise DataError("missing file", weights)
    try:
        with safe_open(str(weights), framework="numpy") as handle:
            handle.keys()
    except Exception as exc:  # SafetensorError on a bad header or a truncated file
        raise DataError(f"corrupt safetensors file ({exc})", weights) from None
    return card


def load_model(path: str | Path) -> LoadedModel:
    """Load a segmenter or encoder directory on the CPU, in eval mode, with a strict state-dict load.

    Raises:
        DataError: a bad directory (see `check_model_dir`) or weights that do not fit the card's architecture.
    """
    from S2DCCore.checkpoint import load_model_dir

    path = Path(path)
    check_model_dir(path)
    tensors, card = load_model_dir(path)
    card_path = path / MODEL_CARD
    try:
        if card["kind"] == "segmenter":
            module = _build_segmenter(card, card_path)
        else:
            module = _build_encoder(card, card_path)
    except S2DCError as exc:
        raise DataError(f"bad architecture in the model card: {exc.problem}", card_path) from None
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise DataError(f"weights do not match the architecture in {MODEL_CARD} ({first})",
                        path / MODEL_WEIGHTS) from None
    module.eval().requires_grad_(False)
    loaded = LoadedModel(card=card, module=module, source=str(path))
    if card["kind"] == "segmenter":
        loaded.segmenter = module
        loaded.encoder = _segmenter_encoder(module)
        n_classes = int(card["architecture"]["out_channels"])
        if loaded.labels and len(loaded.labels) != n_classes:
            raise DataError(f"'labels' names {len(loaded.labels)} values but the network has {n_classes} outputs",
                            card_path)
    else:
        loaded.encoder = module.forward_features
    _card_preprocess(card, str(card_path))  # fail now, not after minutes of inference
    return loaded


def _build_segmenter(card: dict, card_path: Path):
    from S2DCCore.models.encoders import EncoderConfig
    from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter

    arch = dict(card["architecture"])
    if not isinstance(arch.get("encoder"), dict) or "out_channels" not in arch:
        raise DataError("a segmenter architecture needs 'encoder' and 'out_channels'", card_path)
    encoder = from_dict(EncoderConfig, arch.pop("encoder"), where="architecture.encoder.")
    config = from_dict(SegmenterConfig, {**arch, "encoder": encoder}, where="architecture.")
    return build_segmenter(config)


def _build_encoder(card: dict, card_path: Path):
    from S2DCCore.models.encoders import EncoderConfig, build_encoder

    try:
        return build_encoder(from_dict(EncoderConfig, card["architecture"], where="architecture."))
    except ValueError as exc:  # unknown encoder name
        raise DataError(str(exc), card_path) from None


def _segmenter_encoder(network) -> Callable:
    """The encoder inside a SwinUNETR, with the normalisation its decoder uses (as `SwinEncoder`)."""
    def forward_features(x):
        return list(network.swinViT(x, network.normalize))

    return forward_features


def _card_preprocess(card: dict, source: str) -> PreprocessConfig:
    values = dict(card.get("preprocess") or {})
    if "intensity_preset" in card and "preset" not in values:
        values["preset"] = card["intensity_preset"]
    if "spacing" in card:
        values["spacing"] = card["spacing"]
    try:
        return from_dict(PreprocessConfig, values, where="preprocess.")
    except UsageError as exc:
        raise DataError(f"bad preprocessing in the model card: {exc.problem}", source) from None
