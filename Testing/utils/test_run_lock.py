"""The run-folder writer lock: exclusive, named holder, released by the OS when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from S2DCCore.utils.run_lock import LOCK_NAME, FolderBusyError, acquire_run_lock, folder_is_empty, run_lock

HOLD = ("import sys, time; from S2DCCore.utils.run_lock import acquire_run_lock; "
        "acquire_run_lock(sys.argv[1], command='s2dc pretrain --out RUN'); print('held', flush=True); time.sleep(60)")


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    with run_lock(tmp_path / "run", command="s2dc finetune --out run") as lock:
        assert lock.held and (tmp_path / "run" / LOCK_NAME).is_file()
        with pytest.raises(FolderBusyError) as busy:
            acquire_run_lock(tmp_path / "run")
    message = str(busy.value)
    assert message.startswith(f"{tmp_path / 'run'}: is being written by PID {os.getpid()} (s2dc finetune --out run)")
    assert "started 20" in message and busy.value.exit_code == 75
    assert not (tmp_path / "run" / LOCK_NAME).exists() and folder_is_empty(tmp_path / "run")
    acquire_run_lock(tmp_path / "run").release()  # free again


def test_a_killed_holder_leaves_no_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusyError, match=f"PID {holder.pid} \\(s2dc pretrain --out RUN\\)"):
        acquire_run_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the note remains, the lock does not
    lock = acquire_run_lock(tmp_path)
    assert lock.held and folder_is_empty(tmp_path)
    lock.release()


def test_disabled_lock_is_a_no_op(tmp_path):
    with run_lock(tmp_path / "x", enabled=False) as lock:
        assert lock is None and not (tmp_path / "x").exists()
