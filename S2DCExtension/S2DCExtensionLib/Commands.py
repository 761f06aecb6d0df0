"""Command lines of the core's CLI, and where to run them (pure functions, plus interpreter discovery).

Every heavy job is ``<python> -m S2DCCore.cli.main <command> ...`` in a separate process: in Slicer
the Python is ``PythonSlicer`` (Slicer's own interpreter; it inherits Slicer's environment, as in
``slicer.util.executePythonModule``), elsewhere (tests, plain Python) it is ``sys.executable``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CLI_MODULE = "S2DCCore.cli.main"
TASKS = ("segment", "embed", "propagate", "finetune", "pretrain")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRESETS = ("tiny", "small", "base")
PROPAGATE_METHODS = ("grow", "knn", "linear")
# Parameter-node fields each task shows in the panel (the widget hides the others).
TASK_ROWS = {
    "segment": ("inputVolume", "outputSegmentation"),
    "embed": ("inputVolume", "pca", "clusters", "seedPoint"),
    "propagate": ("inputVolume", "scribbles", "propagateMethod", "outputSegmentation"),
    "finetune": ("cohortPath", "runPath", "preset", "steps", "initFromModel"),
    "pretrain": ("cohortPath", "runPath", "preset", "steps"),
}
class CommandError(ValueError):
    """The inputs do not make a valid command (the message is meant for the user)."""


def cliPrefix() -> list[str]:
    """``["-m", "S2DCCore.cli.main"]``: the worker imports the bundled core from its PYTHONPATH
    (`Dependencies.workerEnvironment`); Slicer's own process never imports it."""
    return ["-m", CLI_MODULE]


def pythonExecutable() -> str:
    """``PythonSlicer`` inside Slicer (found on the PATH Slicer sets, as ``slicer.util.executePythonModule``
    does), else ``sys.executable``."""
    import slicer

    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found is None:
            raise CommandError("PythonSlicer was not found next to Slicer; the worker cannot start")
        return found
    return sys.executable


def _runtime(device: str) -> list[str]:
    if device not in DEVICES:
        raise CommandError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    return ["--device", device]


def segmentArgs(image: Path, model: Path, output: Path, device: str = "auto", overlap: float | None = None) -> list[str]:
    """``segment IMAGE --model M -o OUT`` (OUT's sidecar JSON holds names and colours)."""
    args = ["segment", str(image), "--model", str(model), "-o", str(output), *_runtime(device)]
    return args + (["--overlap", f"{overlap:g}"] if overlap is not None else [])


def embedArgs(image: Path, model: Path | None, outdir: Path, pca: bool = True, clusters: int | None = None,
              point: tuple[float, float, float] | None = None, device: str = "auto") -> list[str]:
    """``embed IMAGE [--model M] -o DIR [--pca] [--clusters K] [--point=X,Y,Z]`` (no model: the shipped encoder)."""
    if not pca and not clusters and point is None:
        raise CommandError("choose at least one overlay: PCA colours, structures or a similarity seed point")
    args = ["embed", str(image), *_model(model), "-o", str(outdir), *_runtime(device)]
    if pca:
        args.append("--pca")
    if clusters:
        if clusters < 2:
            raise CommandError(f"structures need at least 2 clusters, not {clusters}")
        args += ["--clusters", str(int(clusters))]
    if point is not None:
        args.append("--point=" + ",".join(f"{float(v):.6g}" for v in point))  # '=': X may be negative
    return args


def propagateArgs(image: Path, model: Path | None, scribbles: Path, output: Path, method: str = "grow",
                  device: str = "auto") -> list[str]:
    """``propagate IMAGE [--model M] --scribbles S -o OUT --method grow|knn|linear`` (no model: the shipped encoder)."""
    if method not in PROPAGATE_METHODS:
        raise CommandError(f"method must be one of {', '.join(PROPAGATE_METHODS)}, not {method!r}")
    return ["propagate", str(image), *_model(model), "--scribbles", str(scribbles), "-o", str(output),
            "--method", method, *_runtime(device)]


def _model(model) -> list[str]:
    """``--model M``, or nothing when no model is chosen (the core then uses its default encoder)."""
    return [] if _unset(model) else ["--model", str(model)]


def trainArgs(command: str, data: Path, out: Path, preset: str = "tiny", steps: int | None = None,
              device: str = "auto", init: Path | None = None, resume: bool = False,
              overrides: tuple[str, ...] = ()) -> list[str]:
    """``pretrain``/``finetune --data D --out RUN --preset P --progress json [...]``."""
    if command not in ("pretrain", "finetune"):
        raise CommandError(f"not a training command: {command!r}")
    if init is not None and command != "finetune":
        raise CommandError("only fine-tuning starts from an encoder (--init)")
    args = [command, "--data", str(data), "--out", str(out), "--preset", preset, "--progress", "json",
            *_runtime(device)]
    if steps is not None:
        args += ["--steps", str(int(steps))]
    if init is not None:
        args += ["--init", str(init)]
    if resume:
        args.append("--resume")
    return args + [str(o) for o in overrides]


def _unset(path) -> bool:
    """An unset ``pathlib.Path`` parameter reads back as ``Path(".")`` (Slicer's working directory): not a choice."""
    return path is None or str(path).strip() in ("", ".")


def checkInputs(task: str, *, volume=None, modelDir: Path | None = None, scribbles=None, cohortDir: Path | None = None,
                runDir: Path | None = None) -> str | None:
    """Why ``task`` cannot run with these inputs (one sentence for the GUI), or None when it can."""
    if task not in TASKS:
        return f"unknown task {task!r}"
    if task in ("segment", "embed", "propagate"):
        if volume is None:
            return "Select an input volume."
        if task == "segment" and _unset(modelDir):
            return "Choose a model folder (it holds model.json and model.safetensors)."
        # embed and propagate use the encoder shipped with S2DC when no model is chosen.
        if not _unset(modelDir) and not (Path(modelDir) / "model.json").is_file():
            return "Choose a model folder (it holds model.json and model.safetensors), or none for the default encoder."
        if task == "propagate" and scribbles is None:
            return "Select a segmentation with scribbles (one segment per class, background included)."
        return None
    if _unset(cohortDir) or not Path(cohortDir).is_dir():
        return "Choose a cohort folder."
    if task == "finetune" and not (Path(cohortDir) / "dataset.json").is_file():
        return "Fine-tuning needs a labelled cohort (a folder with dataset.json)."
    if _unset(runDir):
        return "Choose a run folder for the outputs."
    return None
