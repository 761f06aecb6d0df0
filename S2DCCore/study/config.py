"""Configuration of a study (`S2DCCore.study.runner`)."""

from __future__ import annotations

from dataclasses import dataclass

from S2DCCore.errors import UsageError

METHODS = ("scratch", "swinssl", "alice", "s2dc")
# Methods a study may name besides ``METHODS``: ``default`` is the encoder shipped in the package (no pretraining
# cell; probed on its own working grid and intensity preset, fine-tuned like the others).
EXTRA_METHODS = ("default",)


@dataclass(frozen=True)
class StudyConfig:
    """One study: which encoders, how many labels, which seeds, how long each stage trains.

    Attributes:
        methods: ``scratch`` (random initialisation) and pretraining methods (``swinssl``, ``alice``,
            ``s2dc``); every pretraining method gets the same steps, pool and preset. ``default`` adds the
            shipped encoder (``S2DCCore/resources/default_encoder``), which is not pretrained by the study.
        label_counts: labelled cases (or crops) K the linear probe sees; the first K of the training split.
        finetune_label_counts: the K values that are also fine-tuned (None: all of ``label_counts``; ``()``:
            none, a probe-only study).
            Fine-tuning costs minutes per cell, the probe seconds.
        seeds: seeds of fine-tuning / probing (voxel sampling, decoder init, crops). Pretraining runs
            once per method with ``pretrain_seed``: the seeds measure the spread of what follows it.
        preset: model preset for pretraining and fine-tuning (``tiny`` on a CPU).
        pretrain_steps / finetune_steps: fixed step counts (not time budgets: those are not reproducible).
        test_cases: held-out cases taken from the end of the labelled training split when the cohort has
            no labelled ``test`` split.
        probe_voxels: training voxels per class for the linear probe.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    methods: tuple[str, ...] = METHODS
    label_counts: tuple[int, ...] = (1, 2, 4)
    finetune_label_counts: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: str = "tiny"
    pretrain_steps: int = 300
    finetune_steps: int = 400
    pretrain_seed: int = 0
    test_cases: int = 4
    probe_voxels: int = 500
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS + EXTRA_METHODS]
        if unknown or not self.methods:
            raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none)'}; "
                             f"choose from {', '.join(METHODS + EXTRA_METHODS)}")
        if not self.label_counts or min(self.label_counts) < 1:
            raise UsageError(f"label counts must be ≥ 1, not {self.label_counts}")
        extra = set(self.finetune_label_counts or ()) - set(self.label_counts)
        if extra:
            raise UsageError(f"fine-tune label counts {sorted(extra)} are not among the label counts {self.label_counts}")
        if not self.seeds:
            raise UsageError("give at least one seed")

    @property
    def pretrained(self) -> tuple[str, ...]:
        """Methods the study pretrains itself."""
        return tuple(m for m in self.methods if m in METHODS and m != "scratch")

    @property
    def finetuned_counts(self) -> tuple[int, ...]:
        return tuple(self.label_counts if self.finetune_label_counts is None else self.finetune_label_counts)
