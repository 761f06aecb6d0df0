"""Errors the core raises on purpose, each rendered by the CLI as one line.

`DataError` means "this input is bad" (exit code 1); `UsageError` means "this call is wrong" (exit code 2).
Both carry the offending path, when there is one, so the message always names the file.
"""

from __future__ import annotations

from pathlib import Path


class S2DCError(Exception):
    """Base class for errors that are the user's to fix, shown without a traceback."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class DataError(S2DCError):
    """A file or folder cannot be used: unreadable, wrong dimensionality, NaNs, mismatched label, ..."""

    exit_code = 1


class UsageError(S2DCError):
    """The command or configuration is wrong (unknown key, bad value, output exists, ...)."""

    exit_code = 2


def find_user_error(exc: BaseException) -> S2DCError | None:
    """The `S2DCError` behind ``exc``, following ``__cause__``/``__context__`` (MONAI wraps transform errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, S2DCError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
