"""Configuration of pretraining runs (dataclasses; presets in ``S2DCCore/configs/<preset>.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from S2DCCore.config import PreprocessConfig, RuntimeConfig
from S2DCCore.errors import UsageError
from S2DCCore.data.views.s2dc import ViewConfig
from S2DCCore.losses.s2dc import S2DCLossConfig
from S2DCCore.models.encoders import EncoderConfig
from S2DCCore.training.crops import SamplingConfig
from S2DCCore.training.methods.alice import AliceConfig
from S2DCCore.training.methods.s2dc import S2DCModelConfig
from S2DCCore.training.methods.swinssl import SwinSSLConfig


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay (official S²DC: lr 3e-4, weight decay 0.1, warm-up 500).

    Attributes:
        grad_clip: max global gradient norm (0 = off; the official default is off, 1.0 when enabled).
        min_lr_ratio: floor of the cosine as a fraction of the peak (clamped to ≤ 1).
        weight_decay_end: if set, the weight decay follows a half cosine from ``weight_decay`` to this
            value over the run (DINO/iBOT/Alice: 0.04 → 0.4); None keeps it constant.
        schedule: ``cosine`` (warm-up + half cosine to ``min_lr_ratio``) or ``poly`` (warm-up + nnU-Net's
            ``(1 − t)^0.9``).
        decay_norms_and_biases: weight decay on every parameter, as the official S²DC code
            (``AdamW(model.parameters(), weight_decay=0.1)``); False (default) exempts biases and norm
            weights (1-D tensors), the DINO/iBOT/Alice convention.
    """

    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    weight_decay_end: float | None = None
    decay_norms_and_biases: bool = False
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        from S2DCCore.training.optim import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise UsageError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run needs besides its data and output folders.

    Attributes:
        method: ``s2dc``, ``alice`` or ``swinssl`` (registered in `S2DCCore.training.methods`); each
            reads its own sections (``views``/``s2dc_model``/``s2dc``, ``alice``, ``swinssl``).
        preset: name of the preset the config started from (recorded in the model card).
        steps: optimisation steps. batch_size: regions (volumes) per step and process.
        precision: ``bf16``/``fp16`` autocast on CUDA; CPU always runs fp32.
        save_every: steps between resumable checkpoints (and at the end).
        log_every: steps between metric lines / progress updates.
        cache_volumes: preprocessed volumes kept in memory.
        small_regions: volumes smaller than the S²DC region (``views.grid × views.roi``) on an axis are
            ``pad``-ded with air (default) or ``resize``-d to it (official: ``Resized((384, 384, 96))``
            stretches them; see `random_region`).
        progress: ``bar`` (stderr), ``json`` (JSON lines on stdout, for the Slicer worker) or ``none``.
    """

    method: str = "s2dc"
    preset: str = "base"
    steps: int = 100_000
    batch_size: int = 1
    precision: str = "bf16"
    save_every: int = 200
    log_every: int = 10
    cache_volumes: int = 64
    progress: str = "bar"
    small_regions: str = "pad"
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(feature_size=48))
    views: ViewConfig = field(default_factory=ViewConfig)
    s2dc_model: S2DCModelConfig = field(default_factory=S2DCModelConfig)
    s2dc: S2DCLossConfig = field(default_factory=S2DCLossConfig)
    alice: AliceConfig = field(default_factory=AliceConfig)
    swinssl: SwinSSLConfig = field(default_factory=SwinSSLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(spacing=None, ct_window=(-1000.0, 1000.0)))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.small_regions not in ("pad", "resize"):
            raise UsageError(f"small_regions must be 'pad' or 'resize', not {self.small_regions!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Supervised fine-tuning of SwinUNETR for segmentation (from an encoder, or from scratch).

    Attributes:
        preset: preset name recorded in the model card.
        steps / batch_size: optimisation steps; a step trains on ``batch_size × crops_per_volume`` crops,
            each from a training case drawn uniformly (`S2DCCore.training.crops`).
        roi: training crop and sliding-window size (multiples of 32; ≥ 64 for the SwinUNETR decoder).
        crops_per_volume: see ``batch_size``.
        decoder: ``swinunetr`` (MONAI SwinUNETR-v2, the paper's downstream network) or ``light`` (a
            multi-scale head on the encoder stages, `S2DCCore.models.light_head`; the CPU default).
        head_warmup_steps: with ``--init``, the first steps train the head alone on the frozen encoder
            (LP-FT); then the encoder joins with its own warm-up. Ignored from scratch.
        encoder_lr_scale / layer_decay: with ``--init``, encoder block ``d`` (0 patch embedding … 4 last
            stage) trains at ``lr · encoder_lr_scale · layer_decay^(4 − d)``; the head at ``lr``.
        sampling: crop centring and augmentation (`S2DCCore.training.crops.SamplingConfig`).
        batch_dice: the Dice term over all crops of a step at once (nnU-Net), not per crop.
        class_weights: ``sqrt_inverse`` (DiceCE weights ∝ class frequency^−½ in the training labels) or ``none``.
        train_cases: labelled cases to train on (the first K of the training split; 0 = all).
        val_cases: held-out cases to validate on when the cohort has no validation split (0 = none).
        val_every: steps between sliding-window validations (and at the end); the best mean Dice is kept.
        sw_overlap: sliding-window overlap for validation.
        encoder: used from scratch; with ``--init`` the encoder's own card decides the architecture.
        preprocess: ``spacing: null`` means the training cases' median spacing (recorded in the card).
    """

    preset: str = "base"
    steps: int = 2000
    batch_size: int = 1
    roi: tuple[int, int, int] = (96, 96, 96)
    crops_per_volume: int = 2
    decoder: str = "swinunetr"
    head_warmup_steps: int = 0
    encoder_lr_scale: float = 1.0
    layer_decay: float = 1.0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch_dice: bool = True
    class_weights: str = "sqrt_inverse"
    train_cases: int = 0
    val_cases: int = 4
    val_every: int = 200
    sw_overlap: float = 0.5
    precision: str = "bf16"
    save_every: int = 200
    log_every: int = 10
    progress: str = "bar"
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(feature_size=48))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=1e-5, warmup_steps=50))
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(spacing=None))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        # SwinUNETR's bottleneck is 1/32 of the crop and instance-normalised: it needs ≥ 2 voxels per side.
        from S2DCCore.models.segmenter import DECODERS

        if self.class_weights not in ("sqrt_inverse", "none"):
            raise UsageError(f"finetune.class_weights must be sqrt_inverse or none, not {self.class_weights!r}")
        if self.decoder not in DECODERS:
            raise UsageError(f"finetune.decoder must be one of {', '.join(DECODERS)}, not {self.decoder!r}")
        if any(r % 32 for r in self.roi) or (self.decoder == "swinunetr" and min(self.roi) < 64):
            raise UsageError(f"finetune.roi must be multiples of 32 (and at least 64 for the SwinUNETR decoder), "
                             f"not {tuple(self.roi)}")
