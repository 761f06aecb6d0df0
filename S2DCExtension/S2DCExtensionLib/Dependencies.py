"""Python dependencies, installed on demand (first Apply or the Install button), never at import or in a test.

* **Slicer ≥ 5.10** (Python ≥ 3.10; 5.10 and 5.12 ship 3.12): older Slicer (5.6/5.8, Python 3.9) gets one
  clear message (`checkSlicerPython`) instead of a worker that cannot import the core;
* **torch** only through the *PyTorch* extension's ``PyTorchUtils`` (it picks the CUDA/CPU build), and
  only when ``importlib.metadata`` finds no torch: Slicer's own process never imports torch;
* **everything else** (``Resources/requirements.txt``: monai, pot, nibabel, safetensors, ...) through
  ``slicer.packaging.pip_ensure`` (skipping torch) on Slicer ≥ 5.11, or a confirmation dialog and
  ``slicer.util.pip_install`` with a **list** of requirements plus ``torch==<installed>`` on 5.10, so pip
  can never swap the PyTorch extension's build for a PyPI one;
* the **S2DC core** bundled with the extension (``S2DCCoreSource/S2DCCore`` beside the installed module,
  or the repository root in a source checkout) is **never pip-installed**: the worker process gets its
  folder on ``PYTHONPATH`` (`workerEnvironment`).

In testing mode (``slicer.app.testingEnabled()``) nothing is installed: a `DependencyError` says what is
missing, and the self-test skips (`selfTestMissing`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)
TORCH_REQUIREMENT = ">=2.2"
MODULE_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"
BUNDLED_CORE = "S2DCCoreSource"  # folder name of the bundled core beside the installed module
# Slicer 5.10 is the first release with Python 3.12; 5.6 and 5.8 ship 3.9, which the core cannot run on.
MINIMUM_PYTHON = (3, 10)
MINIMUM_SLICER = "5.10"
# What the self-test needs in Slicer's Python (it skips, never installs, when one is missing).
SELF_TEST_PACKAGES = ("torch", "monai", "nibabel")


class DependencyError(RuntimeError):
    """A dependency is missing and cannot be installed from here (the message says what to do)."""


def readRequirements(path: str | Path = REQUIREMENTS) -> list[str]:
    """Requirement lines of a requirements file (comments, blanks and pip options skipped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split(" #")[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def requirementName(requirement: str) -> str:
    """``"pot>=0.9.4"`` → ``"pot"`` (normalised: lower case, ``_``/``.`` → ``-``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def versionTuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` → (2, 13, 0); pre-release tags are ignored."""
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0].split("rc")[0])[:4])


def satisfiesMinimum(installed: str, requirement: str) -> bool:
    """Whether ``installed`` meets every ``>=`` bound in ``requirement`` (other operators are not checked)."""
    return all(versionTuple(installed) >= versionTuple(bound) for bound in re.findall(r">=\s*([\w.]+)", requirement))


def missingRequirements(requirements: list[str], installedVersion) -> list[str]:
    """The requirements not met, given ``installedVersion(name) -> str | None``."""
    missing = []
    for requirement in requirements:
        version = installedVersion(requirementName(requirement))
        if version is None or not satisfiesMinimum(version, requirement):
            missing.append(requirement)
    return missing


def installedVersion(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def findCoreSource(moduleDir: str | Path = MODULE_DIR) -> Path | None:
    """The folder that holds the bundled ``S2DCCore`` package (what goes on the worker's PYTHONPATH), or None.

    Looks in ``<moduleDir>/S2DCCoreSource`` (installed extension) and ``<moduleDir>/..`` (a source checkout,
    where the module folder sits in the repository).
    """
    for candidate in (Path(moduleDir) / BUNDLED_CORE, Path(moduleDir).parent):
        if (candidate / "S2DCCore" / "__init__.py").is_file():
            return candidate
    return None


def coreVersion(source: Path) -> str | None:
    """``__version__`` of the bundled ``S2DCCore`` (read from its ``__init__.py``, not imported)."""
    text = (Path(source) / "S2DCCore" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'(?m)^__version__\s*=\s*["\']([^"\']+)["\']', text)
    return match.group(1) if match else None


def checkSlicerPython(versionInfo=None) -> None:
    """`DependencyError` on a Slicer whose Python is older than `MINIMUM_PYTHON` (Slicer 5.6/5.8: 3.9)."""
    version = tuple((versionInfo or sys.version_info)[:3])
    if version[:2] < MINIMUM_PYTHON:
        raise DependencyError(
            f"S2DC needs 3D Slicer {MINIMUM_SLICER} or later (Python 3.12); this Slicer runs Python "
            f"{'.'.join(str(v) for v in version)}. Install the current Slicer from https://download.slicer.org.")


def workerEnvironment(base: dict | None = None, coreSource: Path | None = None) -> dict:
    """The worker's environment: ``base`` (default: this process's) with the bundled core first on PYTHONPATH.

    Raises:
        DependencyError: no bundled core, and none importable from Slicer's Python either.
    """
    env = dict(os.environ if base is None else base)
    source = coreSource or findCoreSource()
    if source is None:
        if importlib.util.find_spec("S2DCCore") is None:
            raise DependencyError("the S2DC core library is missing from this installation of the extension; "
                                  "reinstall S2DC from the Extensions Manager")
        return env
    paths = [str(Path(source).resolve())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))  # first wins; no duplicates
    return env


def selfTestMissing() -> list[str]:
    """What the self-test needs and Slicer's Python lacks (checked with metadata: nothing imported or installed)."""
    missing = [f"Slicer {MINIMUM_SLICER} or later (Python 3.12)"] if sys.version_info[:2] < MINIMUM_PYTHON else []
    missing += [name for name in SELF_TEST_PACKAGES if installedVersion(name) is None]
    if findCoreSource() is None:
        missing.append("the bundled S2DC core")
    return missing


def _testing() -> bool:
    import slicer

    app = getattr(slicer, "app", None)
    return bool(app is not None and app.testingEnabled())


def ensureTorch() -> None:
    """torch through PyTorchUtils (asks before installing); `DependencyError` when that is impossible.

    Whether torch is there is read from its metadata: PyTorchUtils' ``torchInstalled()`` would import torch
    into Slicer's process on every Apply. PyTorchUtils is only needed, and only called, when torch is missing.
    """
    version = installedVersion("torch")
    if version is not None:
        if not satisfiesMinimum(version, TORCH_REQUIREMENT):
            raise DependencyError(f"PyTorch {version} is too old (S2DC needs torch{TORCH_REQUIREMENT}). Uninstall "
                                  "it in the 'PyTorch Utils' module, restart Slicer, and press Apply again.")
        return
    if _testing():
        raise DependencyError("PyTorch is not installed (testing mode never installs packages)")
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError("S2DC needs the 'PyTorch' extension to install PyTorch. Install it from the "
                              "Extensions Manager, restart Slicer, and press Apply again.") from None
    log.info("installing PyTorch through PyTorchUtils (this may take several minutes)")
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                    torchVersionRequirement=TORCH_REQUIREMENT) is None:
        raise DependencyError("PyTorch was not installed, so S2DC cannot run. Press Apply again to install it, "
                              "or use the 'PyTorch Utils' module.")


def pipArguments(missing: list[str], torchVersion: str | None) -> list[str]:
    """The list handed to ``slicer.util.pip_install`` on Slicer 5.10: one requirement per item (a list is
    passed to pip as is; a string would be shlex-split), plus ``torch==<installed>`` so that resolving
    monai's ``torch`` requirement keeps the PyTorch extension's build instead of fetching one from PyPI."""
    args = [r for r in missing if requirementName(r) != "torch"]
    if torchVersion is not None:
        args.append(f"torch=={torchVersion}")
    return args


def ensurePackages(requirements: list[str], requester: str = "S2DC") -> None:
    """pip requirements other than torch (``pip_ensure`` on Slicer ≥ 5.11, else confirm + ``pip_install``)."""
    import slicer

    missing = missingRequirements(requirements, installedVersion)
    if not missing:
        return
    if _testing():  # pip_ensure skips in testing mode, 5.10's pip_install would not: never install from a test
        raise DependencyError("missing Python packages (testing mode never installs): " + ", ".join(missing))
    try:
        import slicer.packaging as packaging
    except ImportError:
        packaging = None
    if packaging is not None:
        # torch is skipped: a requirement such as monai's must never pull a PyPI torch over PyTorchUtils' build.
        packaging.pip_ensure(list(requirements), skip_packages=["torch"], requester=requester)
        return
    if not slicer.util.confirmOkCancelDisplay(
            f"{requester} needs these Python packages, which will be downloaded and installed now:\n\n"
            + "\n".join(missing), windowTitle="Install Python packages"):
        raise DependencyError("the Python packages were not installed, so S2DC cannot run")
    slicer.util.pip_install(pipArguments(missing, installedVersion("torch")))


def ensureCore(moduleDir: str | Path = MODULE_DIR) -> Path | None:
    """The bundled core's folder for the worker's PYTHONPATH (never pip-installed; see `workerEnvironment`)."""
    source = findCoreSource(moduleDir)
    if source is None and importlib.util.find_spec("S2DCCore") is None:
        raise DependencyError("the S2DC core library is missing from this installation of the extension; "
                              "reinstall S2DC from the Extensions Manager")
    return source


def ensureAll(requester: str = "S2DC") -> None:
    """Everything the worker needs: a recent enough Slicer, torch, the requirements file, the bundled core."""
    checkSlicerPython()
    ensureCore()
    ensureTorch()
    ensurePackages(readRequirements(), requester=requester)
