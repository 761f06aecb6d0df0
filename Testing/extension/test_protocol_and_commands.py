"""The worker protocol (lines → events, messages) and the CLI command lines, as pure functions."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from S2DCExtensionLib import Commands
from S2DCExtensionLib.Protocol import (DoneEvent, LogEvent, ProgressEvent, estimateEta, failureMessage, formatDuration,
                                       formatProgress, parseLine)


def test_json_progress_and_done_lines_become_events():
    line = json.dumps({"event": "progress", "phase": "finetune", "step": 40, "total": 150,
                       "metrics": {"loss": 0.53, "val_mean_dice": 0.71}, "eta_s": 83.2})
    assert parseLine(line) == ProgressEvent("finetune", 40, 150, {"loss": 0.53, "val_mean_dice": 0.71}, 83.2)
    nan_eta = parseLine('{"event": "progress", "phase": "p", "step": 1, "total": 3, "metrics": {}, "eta_s": null}')
    assert nan_eta.etaS is None
    assert parseLine('{"event": "done", "phase": "pretrain s2dc", "encoder": "run/encoder", "steps": 3}') == \
        DoneEvent({"phase": "pretrain s2dc", "encoder": "run/encoder", "steps": 3})


def test_sliding_window_lines_are_progress_and_everything_else_is_log():
    assert parseLine("windows 13/64", phase="segment") == ProgressEvent("segment", 13, 64)
    assert parseLine("INFO S2DCCore.cli: windows 2/9\n", phase="embed") == ProgressEvent("embed", 2, 9)
    for text in ("segmenting x.nii on cpu", '{"event": "other"}', "{not json}", "[1, 2]"):
        assert parseLine(text) == LogEvent(text)


def test_failure_message_prefers_the_cli_error_line_then_an_exception_then_the_exit_code():
    lines = ["segmenting ...", "s2dc segment: error: /m is an encoder; segmentation needs a segmenter", "x"]
    assert failureMessage(lines, 2) == "/m is an encoder; segmentation needs a segmenter"
    traceback = ["Traceback (most recent call last):", '  File "x", line 1', "ValueError: bad shape (3, 4)"]
    assert failureMessage(traceback, 1) == "ValueError: bad shape (3, 4)"
    assert "killed by SIGKILL" in failureMessage([], -signal.SIGKILL) and "memory" in failureMessage([], -9)
    assert failureMessage(["last words", ""], 3) == "the worker process failed with exit code 3: last words"


def test_eta_and_progress_text():
    assert estimateEta(10.0, 5, 15) == pytest.approx(30.0)
    assert estimateEta(10.0, 0, 15) is None
    assert [formatDuration(s) for s in (0, 75, 3725, None, float("nan"))] == ["0:00", "1:15", "1:02:05", "?", "?"]
    percent, text = formatProgress(ProgressEvent("finetune", 40, 160, {"loss": 0.53125}, 83.0))
    assert percent == 25 and text == "finetune 40/160 · loss 0.5312 · ETA 1:23"
    assert formatProgress(ProgressEvent("x", 3, 0))[0] == 0


def test_segment_embed_and_propagate_command_lines():
    image, model, out = Path("/d/ct.nii"), Path("/m/model"), Path("/w/seg.nii")
    assert Commands.segmentArgs(image, model, out, device="cpu") == [
        "segment", "/d/ct.nii", "--model", "/m/model", "-o", "/w/seg.nii", "--device", "cpu"]
    args = Commands.embedArgs(image, model, Path("/w/e"), pca=True, clusters=4, point=(-12.5, 30.0, 5.25))
    assert args[-3:] == ["--clusters", "4", "--point=-12.5,30,5.25"] and "--pca" in args
    with pytest.raises(Commands.CommandError, match="at least one overlay"):
        Commands.embedArgs(image, model, Path("/w/e"), pca=False)
    with pytest.raises(Commands.CommandError, match="2 clusters"):
        Commands.embedArgs(image, model, Path("/w/e"), clusters=1)
    args = Commands.propagateArgs(image, model, Path("/w/s.nii"), out, method="linear")
    assert args[:2] == ["propagate", "/d/ct.nii"] and args[args.index("--method") + 1] == "linear"
    with pytest.raises(Commands.CommandError, match="device"):
        Commands.segmentArgs(image, model, out, device="tpu")


def test_training_command_lines_ask_for_json_progress():
    args = Commands.trainArgs("finetune", Path("/c"), Path("/r"), preset="small", steps=20, init=Path("/e"),
                              overrides=("optim.lr=1e-4",))
    assert args[:5] == ["finetune", "--data", "/c", "--out", "/r"]
    assert args[args.index("--progress") + 1] == "json" and args[-1] == "optim.lr=1e-4"
    assert args[args.index("--init") + 1] == "/e" and args[args.index("--steps") + 1] == "20"
    with pytest.raises(Commands.CommandError, match="--init"):
        Commands.trainArgs("pretrain", Path("/c"), Path("/r"), init=Path("/e"))
    with pytest.raises(Commands.CommandError):
        Commands.trainArgs("evaluate", Path("/c"), Path("/r"))


def test_cli_prefix_runs_the_core_cli_outside_slicer():
    prefix = Commands.cliPrefix()
    assert prefix == ["-m", Commands.CLI_MODULE] or (prefix[0] == "-c" and "infer_commands" in prefix[1])
    assert Commands.pythonExecutable() == sys.executable


def test_check_inputs_names_what_is_missing(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    volume = object()
    assert Commands.checkInputs("segment") == "Select an input volume."
    assert "model folder" in Commands.checkInputs("embed", volume=volume, modelDir=model)  # a folder, not a model
    # No model chosen: embed and propagate use the shipped encoder, segment needs a segmenter.
    assert Commands.checkInputs("embed", volume=volume, modelDir=Path(".")) is None
    assert "model folder" in Commands.checkInputs("segment", volume=volume, modelDir=None)
    assert "--model" not in Commands.embedArgs(Path("/d/ct.nii"), None, Path("/w/e"))
    assert "--model" not in Commands.propagateArgs(Path("/d/ct.nii"), Path("."), Path("/w/s.nii"), Path("/w/o.nii"))
    assert Commands.propagateArgs(Path("/d/ct.nii"), None, Path("/w/s.nii"), Path("/w/o.nii"))[-3] == "grow"
    (model / "model.json").write_text("{}")
    assert Commands.checkInputs("segment", volume=volume, modelDir=model) is None
    assert "scribbles" in Commands.checkInputs("propagate", volume=volume, modelDir=model)
    assert Commands.checkInputs("pretrain", cohortDir=tmp_path / "missing") == "Choose a cohort folder."
    assert "dataset.json" in Commands.checkInputs("finetune", cohortDir=tmp_path, runDir=tmp_path / "r")
    assert "run folder" in Commands.checkInputs("pretrain", cohortDir=tmp_path, runDir=Path("."))
    assert Commands.checkInputs("pretrain", cohortDir=tmp_path, runDir=tmp_path / "run") is None
