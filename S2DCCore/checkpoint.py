"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

Two kinds of directory:
* a **model directory** (``RUN/encoder/``, ``RUN/model/``): ``model.safetensors`` + ``model.json``, the
  model card (format version, kind, architecture, method, preprocessing, label names, provenance);
* a **training state** (``RUN/checkpoints/last/``): ``state.safetensors`` + ``state.json`` holding any
  nested structure of dicts, lists, numbers, strings and tensors (model, teacher, optimizer, scheduler,
  queue, RNG states, step).

Both are written to a temporary directory and swapped in with renames, so a process killed at any
moment leaves either the previous or the new checkpoint loadable (`resolve_checkpoint_dir` finds it);
a full disk or read-only folder is one `StorageError` line and leaves the previous checkpoint in place.
Nothing is ever unpickled; a ``.pt``/``.pth``/``.pkl`` file given as a model is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from S2DCCore.errors import DataError
from S2DCCore.utils.disk import storage_errors
from S2DCCore.utils.faults import fault_point
from S2DCCore.utils.tempfiles import make_temp_dir, sweep_stale

FORMAT_VERSION = 1
MODEL_WEIGHTS, MODEL_CARD = "model.safetensors", "model.json"
STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


def save_model_dir(path: str | Path, tensors: dict, card: dict) -> Path:
    """Write ``tensors`` and the model ``card`` (``format_version`` added) atomically to ``path``."""
    from safetensors.torch import save_file

    card = {"format_version": FORMAT_VERSION, **card}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / MODEL_WEIGHTS))
        (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2, sort_keys=False))

    return _atomic_dir(Path(path), write, f"the {card.get('kind', 'model')} export", tensor_bytes(tensors),
                       "export")


def read_model_card(path: str | Path) -> dict:
    """Check that ``path`` is a model directory (not a pickle file) and return its card; no torch needed.

    Raises:
        DataError: the path is a pickle file or missing, the card is missing or corrupt, or its
            ``format_version`` is not this one.
    """
    path = _model_dir(Path(path))
    if path.is_file():
        hint = "pickle files are never loaded (they can run code)" if path.suffix.lower() in PICKLE_SUFFIXES else \
            "expected a model directory"
        raise DataError(f"{hint}; give a directory with {MODEL_WEIGHTS} and {MODEL_CARD}", path)
    if not path.is_dir():
        raise DataError("no such model directory", path)
    card = _read_json(path / MODEL_CARD)
    if card.get("format_version") != FORMAT_VERSION:
        raise DataError(f"unsupported format_version {card.get('format_version')!r} (this S2DC reads "
                        f"{FORMAT_VERSION})", path / MODEL_CARD)
    return card


def load_model_dir(path: str | Path) -> tuple[dict, dict]:
    """Read a model directory; return ``(tensors on CPU, card)``.

    Raises:
        DataError: the path is a pickle file, is missing a file, or holds a corrupt one.
    """
    card = read_model_card(path)
    return _read_tensors(_model_dir(Path(path)) / MODEL_WEIGHTS), card


def _model_dir(path: Path) -> Path:
    """``path``, or its ``.old`` twin while a writer killed mid-swap has not been resumed yet."""
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / MODEL_CARD).is_file() and (old / MODEL_WEIGHTS).is_file():
        return old
    return path


def save_state(path: str | Path, state: dict) -> Path:
    """Write a nested training ``state`` (tensors anywhere inside) atomically to ``path``."""
    from safetensors.torch import save_file

    tensors: dict = {}
    skeleton = _encode(state, "", tensors)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps({"format_version": FORMAT_VERSION, "state": skeleton}))

    return _atomic_dir(Path(path), write, "the training checkpoint", tensor_bytes(tensors), "checkpoint")


def tensor_bytes(tensors: dict) -> int:
    """Bytes the tensors of a flat dict take in a safetensors file (data; headers are small)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def load_state(path: str | Path) -> dict:
    """Read a training state written by `save_state` (the directory, or its ``.old`` twin after a kill)."""
    path = resolve_checkpoint_dir(Path(path))
    meta = _read_json(path / STATE_JSON)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"unsupported format_version {meta.get('format_version')!r}", path / STATE_JSON)
    return _decode(meta["state"], _read_tensors(path / STATE_TENSORS))


def resolve_checkpoint_dir(path: Path) -> Path:
    """``path`` if complete, else the previous copy left by an interrupted swap (``path.old``)."""
    for candidate in (path, path.with_name(path.name + ".old")):
        if (candidate / STATE_JSON).is_file() and (candidate / STATE_TENSORS).is_file():
            return candidate
        if (candidate / MODEL_CARD).is_file() and (candidate / MODEL_WEIGHTS).is_file():
            return candidate
    raise DataError("no complete checkpoint here", path)


def _atomic_dir(path: Path, write, what: str, needed: int, point: str) -> Path:
    """Write a directory with ``write(tmp)`` and swap it in for ``path``; the previous one survives any kill.

    Order: write and fsync a temporary sibling; if an earlier kill left only ``path.old``, move it back;
    rename ``path`` → ``path.old`` and the temporary → ``path``; then remove ``path.old``. At every
    instant ``path`` or ``path.old`` is complete (`resolve_checkpoint_dir`). Temporaries of killed
    writers are removed first. A full disk or read-only folder raises a one-line `StorageError`.
    ``point`` names the fault points (`S2DCCore.utils.faults`) ``{point}.write`` and ``{point}.swap``.
    """
    with storage_errors(path, what, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        tmp = make_temp_dir(path)
        try:
            write(tmp)
            fault_point(f"{point}.write", tmp)
            for file in tmp.iterdir():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
            _fsync_dir(tmp)
            _swap(tmp, path, point)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return path


def _swap(tmp: Path, path: Path, point: str) -> None:
    old = path.with_name(path.name + ".old")
    if old.exists() and not path.exists():
        os.replace(old, path)  # a kill mid-swap left the only good copy in .old: put it back first
    if old.exists():
        shutil.rmtree(old)  # path is complete (it only ever arrives by rename), so .old is redundant
    if path.exists():
        os.replace(path, old)
        fault_point(f"{point}.swap", path)  # a kill here leaves path.old complete
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old)


def _fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError("missing file", path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupt JSON ({exc})", path) from None
    if not isinstance(value, dict):
        raise DataError("expected a JSON object", path)
    return value


def _read_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise DataError("missing file", path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError / OSError on corrupt files
        raise DataError(f"corrupt safetensors file ({type(exc).__name__}: {exc})", path) from None


def _encode(obj: Any, key: str, tensors: dict) -> Any:
    """Replace tensors by references into ``tensors``; dicts keep non-string keys as pairs."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensors[key or "_"] = obj.detach().cpu().contiguous()
        return {"__tensor__": key or "_"}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _encode(v, f"{key}.{k}" if key else str(k), tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key!r} in a checkpoint")


def _decode(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj
