"""Python dependencies, installed on demand (first Apply or the Install button), never at import.

* **torch** only through the *PyTorch* extension's ``PyTorchUtils`` (it picks the CUDA/CPU build);
  without that extension the user gets one clear message;
* **everything else** (``Resources/requirements.txt``: monai, pot, nibabel, safetensors, ...) through
  ``slicer.packaging.pip_ensure`` on Slicer ≥ 5.11, or a confirmation dialog and
  ``slicer.util.pip_install`` on older Slicer;
* the **S2DC core** bundled with the extension (``S2DCCoreSource/`` installed beside the module, or the
  repository root in a source checkout) with pip, when it is missing or another version.

Only the worker process imports torch; Slicer's own process never does.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)
TORCH_REQUIREMENT = ">=2.2"
CORE_DISTRIBUTION = "s2dc-core"
MODULE_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"
BUNDLED_CORE = "S2DCCoreSource"  # folder name of the bundled core beside the installed module


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
    """The bundled core (a folder with ``pyproject.toml`` and ``S2DCCore/``), or None.

    Looks in ``<moduleDir>/S2DCCoreSource`` (installed extension) and ``<moduleDir>/..`` (a source checkout,
    where the module folder sits in the repository).
    """
    for candidate in (Path(moduleDir) / BUNDLED_CORE, Path(moduleDir).parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / "S2DCCore" / "__init__.py").is_file():
            return candidate
    return None


def coreVersion(source: Path) -> str | None:
    """The ``version`` of the ``[project]`` table in ``source/pyproject.toml``."""
    match = re.search(r'(?m)^version\s*=\s*"([^"]+)"', (Path(source) / "pyproject.toml").read_text(encoding="utf-8"))
    return match.group(1) if match else None


def ensureTorch() -> None:
    """torch through PyTorchUtils (asks before installing); `DependencyError` when that is impossible."""
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError("S2DC needs the 'PyTorch' extension to install PyTorch. Install it from the "
                              "Extensions Manager, restart Slicer, and press Apply again.") from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        log.info("installing PyTorch through PyTorchUtils (this may take several minutes)")
        if torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise DependencyError("PyTorch was not installed, so S2DC cannot run. Press Apply again to install it, "
                                  "or use the 'PyTorch Utils' module.")
        return
    version = installedVersion("torch")
    if version is not None and not satisfiesMinimum(version, TORCH_REQUIREMENT):
        raise DependencyError(f"PyTorch {version} is too old (S2DC needs torch{TORCH_REQUIREMENT}). Uninstall it in "
                              "the 'PyTorch Utils' module, restart Slicer, and press Apply again.")


def ensurePackages(requirements: list[str], requester: str = "S2DC") -> None:
    """pip requirements other than torch (``pip_ensure`` on Slicer ≥ 5.11, else confirm + ``pip_install``)."""
    import slicer

    try:
        import slicer.packaging as packaging
    except ImportError:
        packaging = None
    if packaging is not None:
        # torch is skipped: a requirement such as monai's must never pull a PyPI torch over PyTorchUtils' build.
        packaging.pip_ensure(requirements, skip_packages=["torch"], requester=requester)
        return
    missing = missingRequirements(requirements, installedVersion)
    if not missing:
        return
    if not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
            f"{requester} needs these Python packages, which will be downloaded and installed now:\n\n"
            + "\n".join(missing), windowTitle="Install Python packages"):
        raise DependencyError("the Python packages were not installed, so S2DC cannot run")
    slicer.util.pip_install(missing)


def ensureCore(source: Path | None = None, requester: str = "S2DC") -> None:
    """pip-install the bundled core when ``s2dc-core`` is missing or another version than the bundle."""
    import slicer

    source = source or findCoreSource()
    installed = installedVersion(CORE_DISTRIBUTION)
    if source is None:
        if installed is None:
            raise DependencyError("the S2DC core library is neither installed nor bundled with this module")
        return
    wanted = coreVersion(source)
    if installed is not None and installed == wanted:
        return
    log.info("installing the S2DC core %s from %s (installed: %s)", wanted, source, installed)
    requirement = f"{CORE_DISTRIBUTION} @ {source.resolve().as_uri()}"
    try:
        import slicer.packaging as packaging
    except ImportError:
        packaging = None
    if packaging is not None:
        packaging.pip_install(requirement, skip_packages=["torch"], requester=requester)
    else:
        slicer.util.pip_install(requirement)


def ensureAll(requester: str = "S2DC") -> None:
    """Everything the worker needs: torch, the requirements file, then the core."""
    ensureTorch()
    ensurePackages(readRequirements(), requester=requester)
    ensureCore(requester=requester)
