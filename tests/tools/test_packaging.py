"""What users get: ``pip install .`` gives the p3s-batch tool only (Ray only with --engine ray);
the registry's node archive holds what ComfyUI loads and no tests or dev tools; the registry metadata
is complete."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import tomllib

from devtools.node_archive import REPO_ROOT, _git_files, archive_files

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_pip_install_into_a_fresh_venv_gives_p3s_batch_and_no_dev_tools(tmp_path: Path):
    source = tmp_path / "source"
    for path in _git_files(REPO_ROOT):  # the checkout as committed (and not yet committed), no build leftovers
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / path, source / path)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True)

    (site,) = venv.glob("lib/python*/site-packages")
    # Its dependencies (httpx, tenacity, websockets, tqdm) come from this environment, through a .pth.
    (site / "deps.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    top_level = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))} - {"__pycache__"}
    assert top_level == {"p3s_batch"}, "no devtools, tests, nodes or p3s_core in the user's environment"
    answer = subprocess.run([str(venv / "bin" / "p3s-batch"), "--help"], capture_output=True, text=True, check=True)
    assert "usage: p3s-batch" in answer.stdout and "--engine {local,ray}" in answer.stdout
    quiet = "import sys, p3s_batch.cli; print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    loaded = subprocess.run([str(python), "-c", quiet], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert loaded.stdout.strip() == "[]", "the default engine imports neither Ray nor torch"


def test_the_node_archive_holds_what_comfyui_loads_and_no_tests():
    files = archive_files()
    top = {path.split("/", 1)[0] for path in files}
    assert not top & {"tests", "devtools", "benchmarks", "p3s_batch", ".ci", "Makefile"}, sorted(top)
    assert {"__init__.py", "nodes", "p3s_core", "web", "locales", "example_workflows", "LICENSE"} <= top
    assert {"web/p3s_points.js", "locales/en/nodeDefs.json", "web/docs/P3SPoints.md"} <= set(files)
    for path in files:  # every ES module a widget imports from the pack ships beside it
        if path.startswith("web/") and path.endswith(".js"):
            for module in re.findall(r'from "\./([\w./-]+\.js)"', (REPO_ROOT / path).read_text()):
                assert f"web/{module}" in files, (path, module)
    for path in files:  # nothing in the archive imports what the archive leaves out
        if path.endswith(".py"):
            text = (REPO_ROOT / path).read_text()
            assert "devtools" not in text and "p3s_batch" not in text, path


def test_registry_metadata_license_classifiers_and_icon():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert "MIT License" in (REPO_ROOT / "LICENSE").read_text() and project["license"] == {"text": "MIT"}
    assert "Operating System :: OS Independent" in project["classifiers"]
    assert any(c.startswith("Environment :: GPU ::") for c in project["classifiers"])
    prefix = "data:image/svg+xml,"
    assert comfy["Icon"].startswith(prefix)
    icon = urllib.parse.unquote(comfy["Icon"][len(prefix) :])
    assert icon == " ".join((REPO_ROOT / "icon.svg").read_text().split()), "Icon is icon.svg"
    assert 'width="400" height="400"' in icon  # the registry takes at most 800 x 400
    assert "web" not in comfy, "WEB_DIRECTORY registers web/; a second registration loads the widget twice"
    assert PYPROJECT["project"]["scripts"] == {"p3s-batch": "p3s_batch.cli:main"}


def test_the_lint_has_the_rules_comfy_node_validate_checks():
    assert {"S102", "S307", "E702"} <= set(PYPROJECT["tool"]["ruff"]["lint"]["select"])
