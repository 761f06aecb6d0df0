"""Disk space refusal, storage errors as one line, fault points and the sweeping of stale temporaries."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

from S2DCCore.training.metrics import kept_lines
from S2DCCore.utils import faults
from S2DCCore.utils.disk import StorageError, check_free_space, format_bytes, storage_error, storage_errors
from S2DCCore.utils.tempfiles import make_temp_file, sweep_stale


def test_check_free_space_refuses_with_sizes(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=5_000_000))
    check_free_space(tmp_path / "new" / "run", 4_000_000, "the run")  # a folder not made yet: its parent counts
    with pytest.raises(StorageError, match=r"needs about 46.0 MB, 5.0 MB free"):
        check_free_space(tmp_path, 46_000_000, "the run")


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied")])
def test_storage_errors_become_one_line(tmp_path, code, words):
    with pytest.raises(StorageError) as caught, storage_errors(tmp_path / "ckpt", "the training checkpoint",
                                                              23_000_000):
        raise OSError(code, os.strerror(code))
    assert str(caught.value).startswith(f"{tmp_path / 'ckpt'}: cannot write the training checkpoint: {words}")
    assert "needs 23.0 MB" in str(caught.value) and "\n" not in str(caught.value)


def test_safetensors_io_errors_are_recognised(tmp_path):
    error = storage_error(Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
                          tmp_path, "the encoder export", 1500)
    assert error is not None and "no space left" in str(error) and "1.5 KB" in str(error)
    assert storage_error(ValueError("bad value"), tmp_path, "x") is None
    assert format_bytes(999) == "999 B" and format_bytes(23_100_000) == "23.1 MB"


def test_fault_points_kill_or_raise(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, "a@2=ENOSPC")
    faults.reset_fault_counts()
    faults.fault_point("a")
    with pytest.raises(OSError) as caught:
        faults.fault_point("a", tmp_path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path)
    code = "from S2DCCore.utils.faults import fault_point; fault_point('b'); print('survived')"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, faults.ENV: "b"}, capture_output=True)
    assert result.returncode == -9 and b"survived" not in result.stdout
    with pytest.raises(ValueError, match="unknown action"):
        faults.parse_faults("a=EWHATEVER")
    faults.reset_fault_counts()


def test_stale_temporaries_of_dead_writers_are_swept(tmp_path):
    target = tmp_path / "seg.nii.gz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".seg.nii.gz.tmp-{dead.stdout.strip()}-abc.nii.gz"
    stale.write_text("partial")
    mine = make_temp_file(target, ".nii.gz")
    other = tmp_path / ".other.nii.gz.tmp-1-x"  # another output's temporary is not touched
    other.write_text("")
    assert sweep_stale(target) == [stale]
    assert mine.exists() and other.exists()


def test_torn_metrics_lines_are_dropped():
    text = '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "lo'
    assert kept_lines(text, 2) == ['{"step": 1, "loss": 1.0}', '{"step": 2, "loss": 0.9}']
    assert kept_lines(text, 1) == ['{"step": 1, "loss": 1.0}']
