"""The ``s2dc`` command line, run as a real process: exit codes, one-line errors, no torch at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from S2DCCore.io.image import write_image


def s2dc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "S2DCCore.cli.main", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "s2dc"
    assert script.exists()
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("s2dc ")


def test_help_and_import_do_not_import_torch():
    code = ("import sys, S2DCCore; from S2DCCore.cli.main import build_parser; build_parser().format_help();"
            "print('torch' in sys.modules, 'monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]
    result = s2dc("--help")
    assert result.returncode == 0 and "phantoms" in result.stdout and "check" in result.stdout


def test_usage_error_exits_2():
    result = s2dc("check")
    assert result.returncode == 2 and "required" in result.stderr


def test_missing_input_is_one_line_naming_the_file(tmp_path):
    result = s2dc("preview", tmp_path / "absent.nii.gz", "-o", tmp_path / "p.png")
    assert result.returncode == 1
    assert result.stderr.strip() == f"s2dc preview: error: {tmp_path / 'absent.nii.gz'}: no such file or folder"
    assert not (tmp_path / "p.png").exists()


def test_verbose_gives_the_traceback(tmp_path):
    result = s2dc("--verbose", "preview", tmp_path / "absent.nii.gz", "-o", tmp_path / "p.png")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_check_reports_bad_files_and_exits_1(tmp_path):
    write_image(tmp_path / "c" / "good.nii.gz", np.zeros((5, 5, 5), np.float32), np.eye(4))
    write_image(tmp_path / "c" / "flat.nii.gz", np.zeros((5, 5), np.float32), np.eye(4))
    (tmp_path / "c" / "text.nii.gz").write_text("no")
    result = s2dc("check", tmp_path / "c", "--json", tmp_path / "r.json")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("s2dc check: ") for line in lines)
    assert any("flat.nii.gz: 2-D image" in line for line in lines)
    assert any("text.nii.gz: not a readable NIfTI" in line for line in lines)
    assert "good" in result.stdout and "3 cases, 1 readable, 2 problems" in result.stdout
    assert (tmp_path / "r.json").exists()


def test_preview_refuses_to_overwrite(tmp_path):
    image = write_image(tmp_path / "a.nii.gz", np.zeros((5, 5, 5), np.float32), np.eye(4))
    (tmp_path / "p.png").write_bytes(b"user file")
    result = s2dc("preview", image, "-o", tmp_path / "p.png")
    assert result.returncode == 2 and "refusing to overwrite" in result.stderr
    assert (tmp_path / "p.png").read_bytes() == b"user file"


def test_phantoms_then_check_acceptance(tmp_path):
    """The issue's acceptance: phantoms --preview, then check exits 0; same seed → byte-identical labels."""
    for name in ("a", "b"):
        result = s2dc("phantoms", tmp_path / name, "--cases", 2, "--size", 32, "--seed", 1, "--preview")
        assert result.returncode == 0, result.stderr
    check = s2dc("check", tmp_path / "a")
    assert check.returncode == 0, check.stderr
    assert "2 cases, 2 readable, 0 problems" in check.stdout
    for label in sorted((tmp_path / "a" / "labelsTr").iterdir()):
        assert label.read_bytes() == (tmp_path / "b" / "labelsTr" / label.name).read_bytes()
    names = json.loads((tmp_path / "a" / "dataset.json").read_text())["labels"]
    assert len([v for k, v in names.items() if k != "0"]) >= 8
    assert len(list((tmp_path / "a" / "preview").glob("*.png"))) == 2
    again = s2dc("phantoms", tmp_path / "a", "--cases", 1, "--size", 32)
    assert again.returncode == 2 and "a" in again.stderr


def test_demo_runs_the_whole_story(tmp_path):
    result = s2dc("demo", tmp_path / "demo", "--cases", 3, "--size", 48, "--train-cases", 1, "--pretrain-steps", 2,
                  "--finetune-steps", 2, "--probe-seeds", 2, "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "demo" / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 4 and "linear probe" in report and "random" in report
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(summary["mean_dice"]) == {"S²DC-pretrained"}
    probe = summary["probe_k1"]
    assert probe["test_cases"] == ["case_002"] and len(probe["s2dc"]) == len(probe["random"]) == 2
    assert all(0.0 <= v <= 1.0 for v in probe["s2dc"] + probe["random"])
    assert summary["heldout_cases"] == ["case_002"]
    assert (tmp_path / "demo" / "inference" / "case_002_seg.nii.gz").exists()
    assert (tmp_path / "demo" / "inference" / "case_002_embedding" / "pca_rgb.nii.gz").exists()
