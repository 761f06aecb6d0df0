"""Edge cases met while measuring: a NIfTI header declaring a huge volume; a folder named like an image."""

from __future__ import annotations

import struct
import subprocess
import sys

import nibabel as nib
import numpy as np

from S2DCCore.io.image import write_image


def _s2dc(*args):
    return subprocess.run([sys.executable, "-m", "S2DCCore.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_huge_declared_volume_is_one_line_naming_shape_and_memory(tmp_path):
    path = tmp_path / "huge.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<8h", raw, 40, 3, 30000, 30000, 1000, 1, 1, 1, 1)  # dim[] of the NIfTI-1 header
    path.write_bytes(bytes(raw))
    result = _s2dc("preview", path, "-o", tmp_path / "p.png")
    assert result.returncode == 1 and not (tmp_path / "p.png").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "30000×30000×1000" in lines[0] and "int16" in lines[0]
    assert "TB to load" in lines[0] and "memory available" in lines[0]


def test_check_names_a_folder_that_looks_like_an_image(tmp_path):
    write_image(tmp_path / "a.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    (tmp_path / "x.nii.gz").mkdir()
    result = _s2dc("check", tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path / 'x.nii.gz'}: is a folder named like an image file" in result.stderr
