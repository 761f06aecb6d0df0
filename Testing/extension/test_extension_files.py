"""The extension's build files, metadata and Slicer conventions, checked statically.

Slicer only installs what the module's CMakeLists lists; the catalog entry must agree with the top-level
CMakeLists; the .ui must bind to the parameter node's fields with widgets its connectors accept; module
files must not import heavy packages at file scope (the ExtensionsIndex review asks exactly that).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "S2DCExtension"
LIB = MODULE / "S2DCExtensionLib"
# Files of the module folder that are build or repository files, not module content.
NOT_MODULE_CONTENT = {"CMakeLists.txt", "README.md"}
# Widget classes the parameter-node GUI connectors accept, per field type (Slicer parameterNodeWrapper).
CONNECTORS = {"bool": {"QCheckBox", "QPushButton"}, "int": {"QSpinBox", "QSlider"}, "str": {"QComboBox", "QLineEdit"},
              "float": {"QDoubleSpinBox", "ctkSliderWidget"}, "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
              "node": {"qMRMLNodeComboBox"}}
ALLOWED_TOP_LEVEL = {"__future__", "slicer", "vtk", "qt", "ctk", "numpy", "S2DCExtensionLib"}


def cmake_list(text: str, variable: str, module_name: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [item.replace("${MODULE_NAME}", module_name) for item in match.group(1).split()]


def cmake_value(text: str, variable: str) -> str:
    match = re.search(rf'set\({variable}\s+"([^"]*)"\)', text)
    assert match, f"{variable} not set"
    return match.group(1)


def test_every_file_of_the_module_is_listed_in_its_cmake_and_every_listed_file_exists():
    text = (MODULE / "CMakeLists.txt").read_text()
    name = re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1)
    assert name == "S2DCExtension"
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS", name)
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", name)
    listed = set(scripts) | set(resources)
    on_disk = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
               and p.relative_to(MODULE).as_posix() not in NOT_MODULE_CONTENT}
    assert on_disk - listed == set(), "files missing from the module's CMakeLists (they would not be installed)"
    assert listed - on_disk == set(), "listed files that do not exist (the Slicer build stops on them)"
    assert all(s.endswith(".py") for s in scripts) and not any(r.endswith(".py") for r in resources)
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_top_level_cmake_adds_the_module_and_agrees_with_the_catalog_entry():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^add_subdirectory\(S2DCExtension\)$", text, re.M)
    assert re.search(r"^project\(S2DC\)$", text, re.M)
    catalog = json.loads((ROOT / "Resources" / "S2DC.json").read_text())
    assert catalog["build_dependencies"] == cmake_value(text, "EXTENSION_DEPENDS").split()
    assert catalog["category"] == cmake_value(text, "EXTENSION_CATEGORY")
    icon_url = cmake_value(text, "EXTENSION_ICONURL")
    assert icon_url.endswith("/Resources/S2DC.png") and (ROOT / "Resources" / "S2DC.png").is_file()


def test_catalog_entry_follows_the_v1_0_2_schema():
    catalog = json.loads((ROOT / "Resources" / "S2DC.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(catalog) <= allowed
    assert catalog["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert isinstance(catalog["build_dependencies"], list) and 1 <= catalog["tier"] <= 5
    assert catalog["category"] in {"Segmentation", "Active Learning", "Utilities"}  # ExtensionsIndex's accepted list


def test_icons_are_128_pixel_pngs():
    from PIL import Image

    for path in (ROOT / "Resources" / "S2DC.png", MODULE / "Resources" / "Icons" / "S2DCExtension.png"):
        with Image.open(path) as icon:
            assert icon.format == "PNG" and icon.size == (128, 128)


def test_requirements_are_the_core_dependencies_except_torch():
    from S2DCExtensionLib.Dependencies import readRequirements, requirementName

    pyproject = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"(?ms)^dependencies = \[(.*?)^\]", pyproject).group(1)
    core = {requirementName(r): r for r in re.findall(r'"([^"]+)"', block)}
    extension = {requirementName(r): r for r in readRequirements()}
    assert set(extension) == set(core) - {"torch"}
    assert all(extension[name] == core[name] for name in extension)  # same minimum versions


def _parameter_fields() -> dict[str, str]:
    tree = ast.parse((LIB / "Parameters.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "S2DCParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    fields = {}
    for statement in cls.body:
        if isinstance(statement, ast.AnnAssign):
            annotation = ast.unparse(statement.annotation)
            base = re.match(r"Annotated\[(\w+(?:\.\w+)?)", annotation)
            kind = base.group(1) if base else annotation
            fields[statement.target.id] = "node" if kind.startswith("vtkMRML") else kind
    return fields


def _ui_widgets() -> list[ET.Element]:
    return list(ET.parse(MODULE / "Resources" / "UI" / "S2DCExtension.ui").getroot().iter("widget"))


def _bindings() -> dict[str, str]:
    bound = {}
    for widget in _ui_widgets():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                name = prop.find("string").text
                assert name not in bound, f"{name} bound twice"
                bound[name] = widget.get("class")
    return bound


def test_ui_binds_every_parameter_to_a_widget_its_connector_accepts():
    fields, bound = _parameter_fields(), _bindings()
    assert set(bound) == set(fields)
    for name, widget_class in bound.items():
        assert widget_class in CONNECTORS[fields[name]], f"{name}: {widget_class} cannot show a {fields[name]}"


def test_the_panel_code_uses_only_widgets_the_ui_defines():
    from S2DCExtensionLib.Commands import TASK_ROWS, TASKS

    names = {w.get("name") for w in _ui_widgets()}
    used = set(re.findall(r"self\.ui\.(\w+)", (LIB / "Widget.py").read_text()))
    assert used and used <= names, f"unknown widgets: {used - names}"
    assert set(TASK_ROWS) == set(TASKS)
    rows = {row for task_rows in TASK_ROWS.values() for row in task_rows}
    assert rows <= set(_parameter_fields()) and {f"{row}Label" for row in rows} <= names


def _top_level_imports(path: Path) -> list[str]:
    roots = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            roots += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            roots.append((node.module or "").split(".")[0])
    return roots


def test_module_files_import_only_the_standard_library_and_slicer_at_file_scope():
    for path in MODULE.rglob("*.py"):
        heavy = [m for m in _top_level_imports(path) if m not in ALLOWED_TOP_LEVEL and m not in sys.stdlib_module_names]
        assert heavy == [], f"{path.name} imports {heavy} at file scope"
        text = path.read_text()
        assert not re.search(r"^\s*(import imp\b|from imp import)", text, re.M), f"{path.name} uses imp (gone in 3.12)"
        compile(text, str(path), "exec")


def test_qt_free_library_imports_without_qt_torch_or_monai():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import S2DCExtensionLib.Logic, S2DCExtensionLib.Walkthrough, S2DCExtensionLib.Dependencies; "
            "bad = [m for m in ('qt', 'ctk', 'torch', 'monai', 'nibabel') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout


def test_module_text_cites_both_papers_and_reload_forgets_the_library():
    text = (MODULE / "S2DCExtension.py").read_text()
    assert "arxiv.org/abs/2507.02581" in text and "arxiv.org/abs/2302.05615" in text
    assert "ICCV 2025" in text and "ICCV 2023" in text
    import S2DCExtensionLib
    import S2DCExtensionLib.Protocol as before

    saved = {k: v for k, v in sys.modules.items() if k.startswith("S2DCExtensionLib")}
    try:
        dropped = S2DCExtensionLib.forgetModules("S2DCExtensionLib")
        assert "S2DCExtensionLib.Protocol" in dropped and "S2DCExtensionLib" in dropped
        import S2DCExtensionLib.Protocol as after

        assert after is not before  # a fresh module object: edits on disk are picked up
    finally:  # the other tests keep using the modules they imported
        S2DCExtensionLib.forgetModules("S2DCExtensionLib")
        sys.modules.update(saved)


def test_extension_index_needs_a_licence_a_screenshot_and_a_readme_picture():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()  # one licence everywhere
    url = cmake_value(text, "EXTENSION_SCREENSHOTURLS")
    prefix = "https://raw.githubusercontent.com/s2dc/S2DC/main/"
    assert url.startswith(prefix) and " " not in url, "one raw URL of a file in this repository"
    screenshot = ROOT / url[len(prefix):]
    from PIL import Image

    with Image.open(screenshot) as picture:
        assert picture.format == "PNG" and min(picture.size) >= 256
    assert screenshot.stat().st_size < 300_000
    assert f"]({screenshot.relative_to(ROOT).as_posix()})" in (ROOT / "README.md").read_text()  # shown in the README
    assert "can be also used without Slicer" in (MODULE / "README.md").read_text()  # the repository-name exception
