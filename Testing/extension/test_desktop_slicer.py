"""What desktop Slicer does that slicer-core does not, reproduced here with its own rules (issue 13).

* pip: Slicer 5.6–5.10 ``slicer.util.pip_install`` shlex-splits a string and passes a list as is; every
  argument we hand it must be a valid requirement without a URL, and the bundled core is never one of them;
* the bundled core reaches the worker on its PYTHONPATH (a real worker process imports it from there);
* Slicer 5.6/5.8 ship Python 3.9: one clear message, and the module files still parse there;
* the ctest self-test skips without touching pip or PyTorchUtils when its packages are missing;
* a blocking console call keeps Slicer's GUI alive (``slicer.app.processEvents``) during a real worker run;
* torch is checked through its metadata, never imported into Slicer's process; terminology codes exist in
  Slicer's General Anatomy list.

Only what does not exist here is faked: ``slicer.app``, ``slicer.util.pip_install``, ``slicer.packaging``,
``PyTorchUtils`` and ``ScriptedLoadableModule`` (Qt). MRML, the worker processes and files are real.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import slicer
from packaging.requirements import InvalidRequirement, Requirement

from S2DCExtensionLib import Commands, Dependencies, MRMLBridge, Terminology
from S2DCExtensionLib.Logic import S2DCLogic

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "S2DCExtension"
# (category code, type code) → (type meaning, modifier codes) of Slicer's General Anatomy list, read from
# Slicer/Slicer@583e9b3:Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json
SLICER_GENERAL_ANATOMY = {
    ("85756007", "85756007"): ("Tissue", set()),
    ("85756007", "248300009"): ("Body fat", set()),
    ("123037004", "15825003"): ("Aorta", set()),
    ("123037004", "10200004"): ("Liver", set()),
    ("123037004", "78961009"): ("Spleen", set()),
    ("123037004", "71854001"): ("Colon", set()),
    ("123037004", "80891009"): ("Heart", set()),
    ("123037004", "64033007"): ("Kidney", {"24028007", "7771000"}),
    ("123037004", "39607008"): ("Lung", {"24028007", "7771000"}),
    ("123037004", "30315005"): ("Small Intestine", set()),
}


class FakeApp:
    """``slicer.app`` of desktop Slicer, as far as the module uses it."""

    def __init__(self, testing: bool = False) -> None:
        self.testing, self.events = testing, 0

    def testingEnabled(self) -> bool:
        return self.testing

    def processEvents(self) -> None:
        self.events += 1


def slicer510_pip_arguments(requirements) -> list[str]:
    """What Slicer 5.6–5.10 ``slicer.util.pip_install(requirements)`` passes after ``pip install``."""
    if isinstance(requirements, str):
        return shlex.split(requirements)
    if isinstance(requirements, list):
        return list(requirements)
    raise ValueError("pip_install requirement input must be string or list")


def assert_plain_requirements(arguments: list[str]) -> list[Requirement]:
    """Every argument is a PEP 508 requirement from an index: no option, no URL, not the bundled core."""
    parsed = []
    for argument in arguments:
        requirement = Requirement(argument)  # raises InvalidRequirement, as pip does
        assert requirement.url is None, f"{argument}: a URL requirement"
        assert requirement.name.lower() != "s2dc-core", "the bundled core must never be pip-installed"
        parsed.append(requirement)
    return parsed


@pytest.fixture
def desktop(monkeypatch):
    """A desktop-Slicer stand-in: ``slicer.app``, a recording ``pip_install``, no ``slicer.packaging`` (5.10),
    no PyTorchUtils; ``calls`` records every install attempt."""
    calls: dict[str, list] = {"pip_install": [], "pip_ensure": [], "installTorch": [], "confirm": []}
    app = FakeApp()
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda requirements: calls["pip_install"].append(requirements),
                        raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, **kwargs: calls["confirm"].append(text) or True, raising=False)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer 5.10: `import slicer.packaging` fails
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    return types.SimpleNamespace(app=app, calls=calls)


def installed_except(monkeypatch, missing=(), torch="2.5.1+cu121"):
    real = Dependencies.installedVersion
    versions = {"torch": torch, **{name: None for name in missing}}
    monkeypatch.setattr(Dependencies, "installedVersion", lambda name: versions[name] if name in versions else real(name))


# ---- item 1: pip gets valid requirements only, the core goes on the worker's PYTHONPATH ---------------------

def test_the_validator_rejects_what_slicer_510_made_of_the_old_core_requirement():
    old = slicer510_pip_arguments("s2dc-core @ file:///opt/Slicer/S2DCCoreSource")
    assert old == ["s2dc-core", "@", "file:///opt/Slicer/S2DCCoreSource"]
    with pytest.raises((InvalidRequirement, AssertionError)):
        assert_plain_requirements(old)


def test_slicer_510_gets_a_list_of_plain_requirements_with_torch_pinned_and_no_core(desktop, monkeypatch):
    installed_except(monkeypatch, missing=("monai", "pot"))
    Dependencies.ensureAll()
    assert len(desktop.calls["pip_install"]) == 1 and desktop.calls["confirm"], "asked, then one install"
    requirements = assert_plain_requirements(slicer510_pip_arguments(desktop.calls["pip_install"][0]))
    by_name = {r.name: str(r.specifier) for r in requirements}
    assert by_name == {"monai": ">=1.4", "pot": ">=0.9.4", "torch": "==2.5.1+cu121"}  # the CUDA build stays
    assert desktop.calls["installTorch"] == []


def test_slicer_512_gets_pip_ensure_with_a_list_skipping_torch_and_never_pip_install(desktop, monkeypatch):
    installed_except(monkeypatch, missing=("nibabel",))
    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_ensure = lambda requirements, **kw: desktop.calls["pip_ensure"].append((requirements, kw))
    packaging.pip_install = lambda *a, **kw: desktop.calls["pip_install"].append(a)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    Dependencies.ensureAll()
    assert desktop.calls["pip_install"] == [] and len(desktop.calls["pip_ensure"]) == 1
    requirements, kwargs = desktop.calls["pip_ensure"][0]
    assert isinstance(requirements, list) and kwargs["skip_packages"] == ["torch"]
    assert {r.name for r in assert_plain_requirements(requirements)} >= {"monai", "nibabel", "safetensors"}


def test_nothing_is_installed_when_everything_is_there(desktop, monkeypatch):
    installed_except(monkeypatch)
    Dependencies.ensureAll()
    assert desktop.calls == {"pip_install": [], "pip_ensure": [], "installTorch": [], "confirm": []}


def test_a_worker_imports_the_bundled_core_from_its_pythonpath(tmp_path):
    # An installed extension's layout: <modules>/S2DCCoreSource/S2DCCore next to the module's files.
    bundle = tmp_path / "qt-scripted-modules" / Dependencies.BUNDLED_CORE
    bundle.mkdir(parents=True)
    (bundle / "S2DCCore").symlink_to(ROOT / "S2DCCore", target_is_directory=True)
    source = Dependencies.findCoreSource(tmp_path / "qt-scripted-modules")
    assert source == bundle and Dependencies.coreVersion(source) == Dependencies.coreVersion(ROOT)
    base = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env = Dependencies.workerEnvironment(base, coreSource=source)
    assert env["PYTHONPATH"].split(":")[0] == str(bundle.resolve())
    code = "import S2DCCore, S2DCCore.cli.main as m; print(S2DCCore.__file__); print(m.__name__)"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(bundle.resolve()))
    assert Commands.cliPrefix() == ["-m", "S2DCCore.cli.main"]


# ---- item 2: Slicer >= 5.10 --------------------------------------------------------------------------------

def test_older_slicer_gets_one_clear_message_and_no_worker(scene, model_dirs, tmp_path, monkeypatch):
    with pytest.raises(Dependencies.DependencyError, match=r"Slicer 5\.10 or later .* Python 3\.9\.10"):
        Dependencies.checkSlicerPython((3, 9, 10))
    Dependencies.checkSlicerPython((3, 12, 10))
    monkeypatch.setattr(Dependencies, "MINIMUM_PYTHON", (3, 99))  # this Python plays Slicer 5.8's 3.9
    volume = MRMLBridge.addVolume(scene, np.zeros((8, 8, 8), np.int16), np.eye(4), "v")
    with pytest.raises(Dependencies.DependencyError) as error:
        S2DCLogic(scene=scene, python=sys.executable, tempRoot=tmp_path).startSegment(volume, model_dirs["segmenter"])
    assert "\n" not in str(error.value) and list(tmp_path.iterdir()) == []


def test_module_files_parse_as_python_39_so_old_slicer_shows_the_message():
    for path in MODULE.rglob("*.py"):
        ast.parse(path.read_text(), str(path), feature_version=(3, 9))


def test_readme_and_extension_description_state_the_minimum_slicer():
    description = re.search(r'set\(EXTENSION_DESCRIPTION\s+"([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text()).group(1)
    assert "Slicer 5.10" in description
    for readme in (ROOT / "README.md", MODULE / "README.md"):
        assert "Slicer 5.10" in readme.read_text(), readme


# ---- item 3: the self-test never installs --------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["torch", "monai", "nibabel", "core"])
def test_the_self_test_skips_without_touching_pip(desktop, monkeypatch, missing):
    import unittest

    shown = []
    fake = types.ModuleType("slicer.ScriptedLoadableModule")
    fake.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (unittest.TestCase,),
                                           {"delayDisplay": lambda self, message, msec=None: shown.append(message)})
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", fake)
    desktop.app.testing = True
    if missing == "core":
        installed_except(monkeypatch)
        monkeypatch.setattr(Dependencies, "findCoreSource", lambda moduleDir=None: None)
    else:
        installed_except(monkeypatch, missing=(missing,), torch=None if missing == "torch" else "2.13.0")
    walked = []
    monkeypatch.setattr(importlib.import_module("S2DCExtensionLib.Walkthrough"), "runWalkthrough",
                        lambda *a, **kw: walked.append(a))
    try:
        SelfTest = importlib.import_module("S2DCExtensionLib.SelfTest")
        SelfTest.S2DCExtensionTest().test_FullFlowOnPhantom()
    finally:
        sys.modules.pop("S2DCExtensionLib.SelfTest", None)
    assert len(shown) == 1 and shown[0].startswith("Skipped: not installed: ")
    assert (missing if missing != "core" else "the bundled S2DC core") in shown[0]
    assert walked == [] and desktop.calls == {"pip_install": [], "pip_ensure": [], "installTorch": [], "confirm": []}
    # And the dependency step itself refuses in testing mode (5.10 has no pip_ensure to skip for us).
    if missing != "core":
        with pytest.raises(Dependencies.DependencyError, match="testing mode"):
            Dependencies.ensureAll()
        assert desktop.calls["pip_install"] == []


# ---- item 4: the console API keeps the GUI alive ----------------------------------------------------------------

def test_a_blocking_console_segment_processes_gui_events_while_the_worker_runs(desktop, scene, model_dirs,
                                                                              worker_env):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    volume = MRMLBridge.addVolume(scene, np.zeros((16, 16, 16), np.int16), affine, "console")
    segmentation = S2DCLogic(scene=scene, python=sys.executable, env=worker_env).segment(volume, model_dirs["segmenter"],
                                                                                       device="cpu")
    assert segmentation.IsA("vtkMRMLSegmentationNode")
    assert desktop.app.events >= 3, "the GUI was frozen for the whole run"


# ---- item 6 ----------------------------------------------------------------------------------------------------

def test_torch_is_checked_through_metadata_without_importing_it_into_slicer(tmp_path):
    # A fresh interpreter plays Slicer's process; PyTorchUtils' own check would import torch.
    code = f"""
import sys, types
sys.path.insert(0, {str(MODULE)!r})
calls = []
sys.modules["PyTorchUtils"] = types.SimpleNamespace(PyTorchUtilsLogic=lambda: types.SimpleNamespace(
    torchInstalled=lambda: calls.append("torchInstalled") or __import__("torch"),
    installTorch=lambda **kw: calls.append(("installTorch", kw)) or object()))
from S2DCExtensionLib import Dependencies
Dependencies.ensureTorch()
assert "torch" not in sys.modules and calls == [], calls
Dependencies.installedVersion = lambda name: None
Dependencies.ensureTorch()
assert calls == [("installTorch", {{"askConfirmation": True, "torchVersionRequirement": ">=2.2"}})], calls
assert "torch" not in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_an_unset_path_parameter_is_not_a_folder_choice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset.json").write_text("{}")
    (tmp_path / "model.json").write_text("{}")
    unset = Path()  # what an unset pathlib.Path parameter reads back as: Slicer's working directory
    assert Commands.checkInputs("pretrain", cohortDir=unset, runDir=tmp_path / "run") == "Choose a cohort folder."
    assert Commands.checkInputs("finetune", cohortDir=unset, runDir=tmp_path / "run") == "Choose a cohort folder."
    assert "model folder" in Commands.checkInputs("segment", volume=object(), modelDir=unset)
    assert Commands.checkInputs("pretrain", cohortDir=tmp_path, runDir=tmp_path / "run") is None


def test_every_terminology_code_is_in_slicers_general_anatomy_list():
    table = json.loads(Terminology.TABLE_PATH.read_text())
    sides = {code[1] for code in table["modifiers"].values()}
    for name, spec in [*table["types"].items(), ("(generic)", table["generic"])]:
        key = (table["categories"][spec["category"]][1], spec["type"][1])
        assert key in SLICER_GENERAL_ANATOMY, f"{name}: {spec['type']} is not in that category of Slicer's list"
        meaning, modifiers = SLICER_GENERAL_ANATOMY[key]
        assert spec["type"][2] == meaning
        assert bool(spec.get("sided")) == (modifiers == sides), name
    for name in ("small_bowel", "colon", "fat", "bowel", "kidney_left", "liver_left", "lung_right"):
        parts = Terminology.terminologyEntry(name).split("~")
        key = (parts[1].split("^")[1], parts[2].split("^")[1])
        meaning, modifiers = SLICER_GENERAL_ANATOMY[key]
        modifier = parts[3].split("^")[1]
        assert modifier == "" or modifier in modifiers, name
    assert Terminology.terminologyEntry("fat").split("~")[2] == "SCT^248300009^Body fat"
    assert Terminology.terminologyEntry("small_bowel").split("~")[2] == "SCT^30315005^Small Intestine"
    assert Terminology.terminologyEntry("colon").split("~")[2] == "SCT^71854001^Colon"
    assert Terminology.terminologyEntry("liver_left").split("~")[3] == "^^"  # Liver has no sides in that list
