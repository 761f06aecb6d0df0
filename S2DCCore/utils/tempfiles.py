"""Temporary siblings of an output, named after the output and the writing process.

Every output is written to ``.{name}.tmp-{pid}-{random}`` beside it and renamed into place. A process
killed mid-write cannot remove its temporary; the next writer of the same output does (`sweep_stale`),
recognising it by the name and by the writer's PID no longer being alive.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def temp_prefix(path: Path) -> str:
    """``.{name}.tmp-{pid}-`` for an output at ``path`` written by this process."""
    return f".{path.name}.tmp-{os.getpid()}-"


def make_temp_dir(path: Path) -> Path:
    """A new temporary folder beside ``path`` (ordinary permissions, as the final folder will have)."""
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    return tmp


def make_temp_file(path: Path, suffix: str = "") -> Path:
    """A new empty temporary file beside ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the output is an ordinary file
    return Path(tmp)


def write_text_atomic(path: Path, text: str, what: str, fault: str | None = None) -> Path:
    """Write ``text`` to a temporary sibling of ``path`` and rename it into place (the temporaries of killed
    writers are swept first; a storage error is one line naming ``path`` and ``what``). ``fault``: the name
    of the `S2DCCore.utils.faults` point hit between the write and the rename."""
    from S2DCCore.utils.disk import storage_errors
    from S2DCCore.utils.faults import fault_point

    with storage_errors(path, what, len(text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        tmp = make_temp_file(path, path.suffix)
        try:
            tmp.write_text(text)
            if fault:
                fault_point(fault, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sweep_stale(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by writers that are no longer running; return them."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.glob(f".{path.name}.tmp-*"):
        pid = _writer_pid(entry.name[len(path.name) + 6:])
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _writer_pid(rest: str) -> int | None:
    head = rest.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
