"""Disk space and write failures: refuse a run that cannot fit, and turn a failed write into one line.

`check_free_space` compares an estimate with what the output's file system has free (``shutil.disk_usage``)
before any step runs. `storage_errors` wraps a write: a full disk (``ENOSPC``, ``EDQUOT``), a refused
write (``EACCES``, ``EPERM``) or a read-only file system (``EROFS``) becomes a `StorageError` naming the
path, what was being written and how much it needed; the CLI prints it as one line. safetensors reports
I/O errors as ``SafetensorError: ... (os error 28)``; those are recognised by their OS error number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from S2DCCore.errors import DataError

STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_OS_ERROR = re.compile(r"os error (\d+)")


class StorageError(DataError):
    """The output's file system refused a write (full, read-only or not permitted)."""


def format_bytes(n: float) -> str:
    """``1536`` → ``1.5 KB`` (powers of 1000, as ``df -H`` and file managers show them)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return int(shutil.disk_usage(path).free)


def check_free_space(path: str | Path, needed: int, what: str) -> None:
    """Refuse (`StorageError`) when the file system of ``path`` has less than ``needed`` bytes free."""
    free = free_bytes(path)
    if free < needed:
        raise StorageError(f"not enough disk space for {what}: needs about {format_bytes(needed)}, "
                           f"{format_bytes(free)} free; free some space or choose another folder", path)


def os_errno(exc: BaseException) -> int | None:
    """The OS error number behind ``exc`` (an `OSError`, or a message ending ``(os error N)``)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = _OS_ERROR.search(str(exc))
    return int(found.group(1)) if found else None


def storage_error(exc: BaseException, path: str | Path | None = None, what: str = "a file",
                  needed: int | None = None) -> StorageError | None:
    """The one-line `StorageError` for a failed write of ``what`` to ``path`` (default: the path the
    `OSError` names), or None if the failure was not about storage."""
    code = os_errno(exc)
    if code not in STORAGE_ERRNOS:
        return None
    path = path if path is not None else getattr(exc, "filename", None)
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system"}.get(code, "permission denied")
    size = "" if needed is None or path is None else \
        f" (needs {format_bytes(needed)}, {format_bytes(free_bytes(path))} free)"
    return StorageError(f"cannot write {what}: {reason}{size}", path)


@contextlib.contextmanager
def storage_errors(path: str | Path, what: str, needed: int | None = None):
    """Re-raise a storage failure inside the block as a `StorageError` about ``path``; others pass through."""
    try:
        yield
    except Exception as exc:
        error = storage_error(exc, path, what, needed)
        if error is None:
            raise
        raise error from exc


def tree_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total
