"""A worker process that never blocks the caller: ``subprocess.Popen`` + a reader thread (Qt-free).

The widget calls `WorkerProcess.poll` from a ``QTimer``; the Python console and tests call
`WorkerProcess.wait`, which keeps Slicer's GUI alive (``slicer.app.processEvents()`` between polls) when
it runs inside Slicer. Output lines (stdout and stderr merged) are parsed with `Protocol.parseLine`.

The worker starts in its own process group (POSIX session / Windows process group), so `cancel`
kills the whole tree: Slicer's ``PythonSlicer`` is a launcher whose real Python is a child, and
training may start data-loader processes. ``psutil`` is used as well when it is installed, for
descendants that left the group.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque

from S2DCExtensionLib.Protocol import DoneEvent, LogEvent, ProgressEvent, estimateEta, failureMessage, parseLine

log = logging.getLogger(__name__)
IDLE, RUNNING, SUCCEEDED, FAILED, CANCELLED = "idle", "running", "succeeded", "failed", "cancelled"
# Seconds a cancelled worker gets to exit on SIGTERM before the group is SIGKILLed.
CANCEL_GRACE_S = 2.0
_EOF = object()


class WorkerProcess:
    """Run ``args`` and turn its output into events.

    Args:
        args: the command line (``[python, "-m", "S2DCCore.cli.main", "segment", ...]``).
        env: the environment (None: inherit this process's).
        cwd: working directory.
        phase: name given to sliding-window progress lines (which carry none).
        logLimit: lines of output kept for `lines` and the failure message.
        clock: monotonic clock (injected by tests).

    Examples:
        >>> worker = WorkerProcess([sys.executable, "-c", "print('hello')"])
        >>> worker.start(); worker.wait()
        'succeeded'
    """

    def __init__(self, args: list[str], env: dict | None = None, cwd: str | None = None, phase: str = "",
                 logLimit: int = 5000, clock=time.monotonic) -> None:
        self.args = [str(a) for a in args]
        self.env, self.cwd, self.phase, self.clock = env, cwd, phase, clock
        self.lines: deque[str] = deque(maxlen=logLimit)
        self.state = IDLE
        self.returncode: int | None = None
        self.lastProgress: ProgressEvent | None = None
        self.doneInfo: dict | None = None
        self._process: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._phaseStart: dict[str, tuple[float, int]] = {}
        self._eof = False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def errorMessage(self) -> str | None:
        """One readable message when the run failed, else None."""
        if self.state == FAILED:
            return failureMessage(list(self.lines), self.returncode)
        return "cancelled" if self.state == CANCELLED else None

    def start(self) -> "WorkerProcess":
        """Start the process and its reader thread; returns at once."""
        if self.state != IDLE:
            raise RuntimeError("a worker process can only be started once")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("PYTHONIOENCODING", "utf-8")
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: cancel() kills the tree
        log.info("starting worker: %s", " ".join(self.args))
        self._process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=self.cwd, text=True,
                                         encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self.state = RUNNING
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True,
                         name=f"S2DC worker {self._process.pid} reader").start()
        return self

    def poll(self) -> list:
        """Events from the output read since the last call; updates `state` once the process has ended."""
        events = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _EOF:
                self._eof = True
                continue
            events.append(self._handle(item))
        if self.state == RUNNING and self._eof:
            self.returncode = self._process.wait()
            self.state = SUCCEEDED if self.returncode == 0 else FAILED
            log.info("worker %s ended: %s (exit code %s)", self.pid, self.state, self.returncode)
        return [e for e in events if e is not None] if self.state != CANCELLED else []

    def wait(self, timeout: float | None = None, onEvent=None, interval: float = 0.05) -> str:
        """Block until the process ends (or ``timeout`` seconds pass); pass each event to ``onEvent``.

        Inside Slicer, the GUI's events are processed between polls, so a blocking call from the Python
        console (``S2DCLogic().segment(...)``) does not freeze the application."""
        deadline = None if timeout is None else self.clock() + timeout
        while True:
            for event in self.poll():
                if onEvent is not None:
                    onEvent(event)
            if self.state != RUNNING or (deadline is not None and self.clock() >= deadline):
                return self.state
            processGuiEvents()
            time.sleep(interval)

    def cancel(self, grace: float = CANCEL_GRACE_S) -> None:
        """Kill the worker and everything it started; `state` becomes ``cancelled``."""
        if self._process is None or self.state != RUNNING:
            return
        self.state = CANCELLED
        killProcessTree(self._process, grace)
        self.returncode = self._process.returncode
        log.info("worker %s cancelled", self.pid)

    def _read(self, stream) -> None:
        try:
            for line in stream:
                self._queue.put(line.rstrip("\r\n"))
        except (OSError, ValueError):  # the pipe closed under us (cancel)
            pass
        finally:
            self._queue.put(_EOF)

    def _handle(self, line: str):
        self.lines.append(line)
        event = parseLine(line, self.phase)
        if isinstance(event, ProgressEvent):
            now = self.clock()
            start = self._phaseStart.setdefault(event.phase, (now, event.step))
            if event.etaS is None:
                elapsed, done = now - start[0], event.step - start[1]
                eta = estimateEta(elapsed, done, event.total - event.step) if done > 0 else None
                event = ProgressEvent(event.phase, event.step, event.total, event.metrics, eta)
            self.lastProgress = event
        elif isinstance(event, DoneEvent):
            self.doneInfo = event.info
        return event if not isinstance(event, LogEvent) or line.strip() else None


def processGuiEvents() -> None:
    """``slicer.app.processEvents()`` when running inside Slicer (no-op elsewhere, e.g. on slicer-core)."""
    slicer = sys.modules.get("slicer")
    app = getattr(slicer, "app", None) if slicer is not None else None
    if app is not None:
        app.processEvents()


def descendants(pid: int) -> list:
    """``psutil`` processes below ``pid`` (empty when psutil is not installed)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def killProcessTree(process: subprocess.Popen, grace: float = CANCEL_GRACE_S) -> None:
    """Terminate ``process`` and its process group (then SIGKILL after ``grace`` s); reap ``process``."""
    stragglers = descendants(process.pid)
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        _signalGroup(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _signalGroup(process.pid, signal.SIGKILL)  # whatever of the group is left, e.g. a child ignoring TERM
    for child in stragglers:
        try:
            child.kill()
        except Exception:  # psutil.NoSuchProcess and friends: already gone
            pass
    if process.poll() is None:
        process.kill()
    process.wait()


def _signalGroup(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
