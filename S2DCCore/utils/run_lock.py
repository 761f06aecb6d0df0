"""One writer per run folder: an exclusive OS file lock on ``FOLDER/.s2dc.lock``.

``fcntl.flock`` on a file inside the folder, held for as long as the run writes. The operating system
drops the lock when the process ends, however it ends (SIGKILL, crash, power-off of a local disk), so a
killed job never leaves a stale lock: the file that may remain is not a lock, only the last holder's
note. The holder writes its PID, command line and start time into the file; a second writer reads them
and stops at once with `FolderBusyError`, one line naming the folder and the holder. A clean release
removes the file (safely: a writer that opened it before the removal re-checks the inode and retries).

Readers (``evaluate``, ``segment --model RUN/model``, ``embed``) take no lock: every file they read is
swapped in whole by a rename (`S2DCCore.checkpoint`), so they see the old or the new version.

flock works on local file systems and on NFS v4 (emulated with POSIX locks by Linux); on Windows, where
``fcntl`` does not exist, `acquire_run_lock` only records the holder (no exclusion).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from pathlib import Path

from S2DCCore.errors import UsageError
from S2DCCore.utils.disk import storage_errors

LOCK_NAME = ".s2dc.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class FolderBusyError(UsageError):
    """Another process is writing this folder (exit code 75, EX_TEMPFAIL: try again when it is done)."""

    exit_code = 75


class RunLock:
    """A held lock; `release` (or leaving `run_lock`) frees it. The OS frees it if the process dies."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self.path, self._fd = folder, folder / LOCK_NAME, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file (while still holding it), then unlock; safe to call twice."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self._fd, self.path):
                os.unlink(self.path)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None


def acquire_run_lock(folder: str | Path, command: str | None = None) -> RunLock:
    """Create ``folder`` if needed and take its writer lock.

    Raises:
        FolderBusyError: another live process holds the lock (the message names it).
        StorageError: the lock file cannot be written (read-only folder, full disk).
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    with storage_errors(path, "the run folder's lock file"):
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise FolderBusyError(f"is being written by {holder}; wait for it to finish or stop it, "
                                          "then rerun", folder) from None
            if _same_file(fd, path):  # not a file a releasing holder removed between our open and flock
                break
            os.close(fd)
        note = json.dumps(holder_note(command)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)
    return RunLock(folder, fd)


@contextlib.contextmanager
def run_lock(folder: str | Path, *, enabled: bool = True, command: str | None = None):
    """``with run_lock(out):`` hold the writer lock of ``out`` for the block (no-op when not ``enabled``,
    e.g. on DDP ranks other than 0, which never write)."""
    if not enabled:
        yield None
        return
    lock = acquire_run_lock(folder, command)
    try:
        yield lock
    finally:
        lock.release()


def holder_note(command: str | None = None) -> dict:
    """What a holder writes into the lock file: PID, host, command line and start time (UTC)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command or _command_line(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def describe_holder(note: dict) -> str:
    """``PID 123 (s2dc pretrain --out RUN ...) started 2026-11-30T08:00:00+00:00``."""
    host = "" if note.get("host") in (None, socket.gethostname()) else f" on {note['host']}"
    command = note.get("command") or "?"
    if len(command) > 160:
        command = command[:157] + "..."
    return f"PID {note.get('pid', '?')}{host} ({command}) started {note.get('started', '?')}"


def folder_is_empty(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but (possibly) its lock file."""
    return not any(entry.name != LOCK_NAME for entry in folder.iterdir())


def _read_holder(fd: int) -> str:
    try:
        note = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        note = {}
    return describe_holder(note) if note else "another process (starting up)"


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and (argv[0].endswith(("S2DCCore/cli/main.py", "s2dc")) or argv[0] == "-m"):
        argv[0] = "s2dc"
    return " ".join(argv)
