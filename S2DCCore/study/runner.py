"""``s2dc study``: pretrain each method, then linear-probe and fine-tune from it with K labelled cases.

Layout of ``STUDY/`` (every ``*.json`` result is a finished cell, never recomputed on a rerun):

    study.json                      the settings and the split (a rerun must match them)
    cohorts/pretrain, cohorts/k{K}  manifests: the unlabelled pool; the first K labelled cases + the test cases
    pretrain/{method}/              pretraining runs (resumed from their last checkpoint), result.json when done
    probe/{method}/k{K}_s{seed}.json        linear-probe Dice on the test cases (frozen encoder)
    floors/{floor}/...json                  intensity-only probe per K and seed; given floors (mirrored atlas)
    finetune/{method}/k{K}_s{seed}/         fine-tuning runs (resumed), result.json when evaluated
    results/                        results.csv (per structure), table.md, learning_curve.png, summary.json

Fixed step counts make every cell reproducible from its seed; stopping and rerunning the same command
continues where it stopped. One process writes a study folder at a time (`S2DCCore.utils.run_lock`).
``finetune_label_counts=()`` runs a probe-only study (no fine-tuning cells).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from S2DCCore.config import load_config, to_dict
from S2DCCore.errors import UsageError
from S2DCCore.evaluation import CaseScore, dice_score, summarize
from S2DCCore.io.image import read_image
from S2DCCore.study.cells import run_cell, write_json
from S2DCCore.study.config import StudyConfig
from S2DCCore.study.plan import StudyData, plan_study, write_cohorts
from S2DCCore.utils.run_lock import folder_is_empty, run_lock

log = logging.getLogger(__name__)
PROBE_STAGES = (0, 1, 2, 3, 4)


def run_study(data: str | Path, out: str | Path, config: StudyConfig) -> dict:
    """Run (or continue) the study of the cohort at ``data`` in ``out``; return the summary."""
    out = Path(out)
    plan = plan_study(data, config)
    with run_lock(out):  # one study process per folder; its pretrain/fine-tune runs lock their own folders
        return _run_study(out, plan, config)


def _run_study(out: Path, plan: StudyData, config: StudyConfig) -> dict:
    _claim(out, {"config": to_dict(config), "data": plan.summary()})
    cohorts = write_cohorts(plan, out / "cohorts", config.label_counts)
    encoders = {m: _pretrain_cell(out, m, cohorts["pretrain"], plan, config) for m in config.pretrained}
    if "default" in config.methods:
        from S2DCCore.inference.model_io import default_model_dir

        encoders["default"] = default_model_dir()
    for name, cases in plan.floors.items():
        run_cell(out / "floors" / _slug(name) / "result.json", lambda c=cases: _given_floor(c, plan))
    _probe_cells(out, plan, config, encoders)
    for k in config.finetuned_counts:
        for seed in config.seeds:
            for method in config.methods:
                _finetune_cell(out, method, k, seed, cohorts[f"k{k}"], encoders.get(method), plan, config)
    from S2DCCore.study.results import write_results

    return write_results(out, plan, config)


def _claim(out: Path, settings: dict) -> None:
    """Create ``out`` for this study, or check that it already holds the same study."""
    marker = out / "study.json"
    if marker.exists():
        stored = json.loads(marker.read_text())
        if stored != json.loads(json.dumps(settings)):
            raise UsageError("holds a study with other settings or data; use a new folder, or the same settings "
                             "to continue it", marker)
        return
    if out.exists() and not folder_is_empty(out):
        raise UsageError("output folder exists, is not empty and holds no study.json; choose a new one", out)
    write_json(marker, settings)


def pretrain_config(method: str, config: StudyConfig, intensity: str):
    from S2DCCore.training.config import PretrainConfig

    steps = config.pretrain_steps
    return load_config(PretrainConfig, config.preset, [
        f"method={method}", f"steps={steps}", f"runtime.seed={config.pretrain_seed}",
        f"runtime.device={config.device}", f"preprocess.preset={intensity}", "progress=none", "log_every=10",
        f"save_every={max(10, steps // 10)}"], section="pretrain")


def finetune_config(config: StudyConfig, seed: int, intensity: str, flip_axes=()):
    """The preset's fine-tuning recipe for a study cell; ``flip_axes``: the cohort's mirror-valid axes
    (``study.probe_flip_axes``), mirrored during fine-tuning as the probe trains on mirrored copies."""
    from S2DCCore.training.config import FinetuneConfig

    steps = config.finetune_steps
    return load_config(FinetuneConfig, config.preset, [
        f"steps={steps}", "train_cases=0", "val_cases=0", f"val_every={steps}", f"save_every={max(10, steps // 5)}",
        f"runtime.seed={seed}", f"runtime.device={config.device}", f"preprocess.preset={intensity}",
        f"sampling.flip_axes={list(flip_axes)}", "progress=none", "log_every=10"], section="finetune")


def _pretrain_cell(out: Path, method: str, pool: Path, plan: StudyData, config: StudyConfig) -> Path:
    from S2DCCore.training.pretrain import pretrain

    run = out / "pretrain" / method

    def compute() -> dict:
        resume = _resumable(run)
        encoder = pretrain(pool, run, pretrain_config(method, config, plan.intensity), resume=resume)
        return {"method": method, "steps": config.pretrain_steps, "encoder": str(encoder), "resumed": resume}

    run_cell(run / "result.json", compute)
    return run / "encoder"


def _finetune_cell(out: Path, method: str, k: int, seed: int, cohort: Path, encoder: Path | None,
                   plan: StudyData, config: StudyConfig) -> dict:
    from S2DCCore.evaluation import evaluate
    from S2DCCore.training.finetune import finetune

    run = out / "finetune" / method / f"k{k}_s{seed}"

    def compute() -> dict:
        resume = _resumable(run)
        model = finetune(cohort, run, finetune_config(config, seed, plan.intensity, plan.probe_flip_axes), init=encoder,
                         resume=resume)
        result = evaluate(model, cohort, split="test", device=config.device)
        return {"method": method, "k": k, "seed": seed, "steps": config.finetune_steps, "resumed": resume,
                "summary": result["summary"], "cases": result["cases"]}

    return run_cell(run / "result.json", compute)


def _resumable(run: Path) -> bool:
    """Whether a stopped run can continue; a run stopped before its first checkpoint starts afresh."""
    if (run / "checkpoints" / "last").exists():
        return True
    if run.exists():
        shutil.rmtree(run)
    return False


def _probe_cells(out: Path, plan: StudyData, config: StudyConfig, encoders: dict[str, Path]) -> None:
    """Linear probes of every method (and the intensity-only floor) × K × seed."""
    from S2DCCore.study import probe

    from S2DCCore.utils.runtime import resolve_device

    device = resolve_device(config.device)  # the encoders' passes run there (the probe fit is small: CPU)
    preprocess = pretrain_config("s2dc", config, plan.intensity).preprocess
    values = sorted(plan.labels)
    kmax = max(config.label_counts)
    train_cases, test_cases = plan.labelled[:kmax], plan.test
    # Per labelled case, its variants: the case itself, then its mirrored copies (study.probe_flip_axes).
    train_images, train_labels = [], []
    for case in train_cases:
        image = read_image(case.image)
        label = _indices(read_image(case.label).array, values, case.label)
        train_images.append([image] + [_mirrored(image, a) for a in plan.probe_flip_axes])
        train_labels.append([label] + [np.flip(label, a) for a in plan.probe_flip_axes])
    test_images = [read_image(c.image) for c in test_cases]
    test_labels = [read_image(c.label).array for c in test_cases]

    def cells(folder: Path, feature_fn, seeds) -> None:
        todo = [(k, s) for k in config.label_counts for s in seeds
                if not (folder / f"k{k}_s{s}.json").exists()]
        if not todo:
            return
        cache: dict = {}

        def features():  # computed once per encoder, only when a cell needs them
            if not cache:
                cache["train"] = [[feature_fn(im) for im in variants] for variants in train_images]
                cache["test"] = [feature_fn(im) for im in test_images]
            return cache["train"], cache["test"]

        for k, seed in todo:
            def compute(k=k, seed=seed) -> dict:
                train_maps, test_maps = features()
                rng = np.random.default_rng(seed)
                maps = [m for variants in train_maps[:k] for m in variants]
                labels = [lab for variants in train_labels[:k] for lab in variants]
                picks = probe.sample_voxels(labels, len(values), config.probe_voxels, rng)
                x = np.concatenate([probe.features_at(m, p[:, :3]) for m, p in zip(maps, picks)])
                y = np.concatenate([p[:, 3] for p in picks])
                fitted = probe.fit_probe(x, y, len(values), maps[0].channels)
                preds = [np.asarray(values)[probe.predict(fitted, m)] for m in test_maps]
                return {"k": k, "seed": seed, "voxels": int(len(y)),
                        **_score(preds, test_labels, test_cases, plan.labels)}
            run_cell(folder / f"k{k}_s{seed}.json", compute)

    cells(out / "floors" / "intensity_only", lambda im: probe.intensity_features(im, preprocess), config.seeds)
    for method in config.methods:
        if method == "scratch":
            for seed in config.seeds:  # a fresh random encoder per seed
                encoder = _random_encoder(config, seed, device)
                cells(out / "probe" / method / f"s{seed}",
                      lambda im, e=encoder: probe.encoder_features(im, e, preprocess, stages=PROBE_STAGES,
                                                                   device=device),
                      [seed])
        else:
            from S2DCCore.inference.model_io import load_model

            model = load_model(encoders[method]).to(device)
            # The study's encoders share its grid and intensity preset; the shipped one keeps its own.
            own = model.preprocess if method == "default" else preprocess
            cells(out / "probe" / method,
                  lambda im, e=model.encoder, pp=own: probe.encoder_features(im, e, pp, stages=PROBE_STAGES,
                                                                             device=device),
                  config.seeds)


def _mirrored(image, axis: int):
    """The anatomy mirrored along array ``axis`` on the same grid (a new subject, not a relabelled view)."""
    from S2DCCore.io.image import Image

    return Image(np.ascontiguousarray(np.flip(image.array, axis)), image.affine)


def _random_encoder(config: StudyConfig, seed: int, device=None):
    import torch

    from S2DCCore.models.encoders import build_encoder

    torch.manual_seed(seed)
    module = build_encoder(pretrain_config("s2dc", config, "ct").encoder).eval().requires_grad_(False).to(device)
    return module.forward_features


def _given_floor(cases: dict[str, Path], plan: StudyData) -> dict:
    test = {c.name: c for c in plan.test}
    unknown = sorted(set(cases) - set(test))
    if unknown:
        raise UsageError(f"floor predictions for cases that are not test cases: {', '.join(unknown)}")
    chosen = [test[name] for name in cases]
    preds = [read_image(cases[c.name]).array for c in chosen]
    return _score(preds, [read_image(c.label).array for c in chosen], chosen, plan.labels)


def _score(preds, refs, cases, labels: dict[int, str]) -> dict:
    scores = []
    for pred, ref, case in zip(preds, refs, cases):
        for value, name in sorted(labels.items()):
            if value:
                scores.append(CaseScore(case.name, name, value, dice_score(pred == value, ref == value), None))
    return {"summary": summarize(scores), "cases": [s.__dict__ for s in scores]}


def _indices(label: np.ndarray, values: list[int], source) -> np.ndarray:
    lookup = np.full(int(max(values)) + 1, -1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    if label.min() < 0 or label.max() > max(values) or (lookup[label.astype(np.int64)] < 0).any():
        raise UsageError("label values outside dataset.json 'labels'", source)
    return lookup[label.astype(np.int64)]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
