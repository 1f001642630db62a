"""rlcal installs as a package, not only as a checkout: the wheel carries every module and the recipes (from the
one recipes/ folder), and recipe paths resolve from any folder by the rule in rlcal.common.recipes.

    pytest tests/test_packaging.py        # builds a wheel offline (pip wheel --no-build-isolation), ~10 s
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rlcal.common.errors import RlcalError
from rlcal.common.recipes import find_recipe, shipped_recipe, shipped_recipes_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPE_FILES = sorted(p.relative_to(ROOT / "recipes").as_posix() for p in (ROOT / "recipes").rglob("*.yaml"))
TOY = "recipes/toy/grpo/config_binary.yaml"


def test_pyproject_lists_every_rlcal_package_and_maps_the_recipes():
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rlcal").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"rlcal.recipes"}  # a new subpackage must be listed
    assert setuptools["package-dir"] == {"rlcal.recipes": "recipes"}  # the recipes/ folder itself: one copy
    assert "rlcal" not in setuptools.get("package-data", {})  # no stale data globs (rlcal/data is code now)


def _copy_source(dest: Path) -> Path:
    """The files a build reads. Builds run on a copy: pip builds in-tree, and a stale build/ in the checkout
    could leak old files into the wheel."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("rlcal", "recipes"):
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    src = _copy_source(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)]
    proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("rlcal-*.whl")
    return path


def test_the_wheel_ships_every_module_and_the_recipes_from_recipes(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rlcal").rglob("*.py")}
        assert modules <= names, sorted(modules - names)
        shipped = {n.removeprefix("rlcal/recipes/") for n in names if n.startswith("rlcal/recipes/")}
        assert shipped == {*RECIPE_FILES, "__init__.py"}
        for name in RECIPE_FILES:  # byte for byte the files under recipes/: no second copy to drift
            assert zf.read(f"rlcal/recipes/{name}") == (ROOT / "recipes" / name).read_bytes()
        assert "toy/pretrain.yaml" in RECIPE_FILES and "toy/grpo/config_confidence_target.yaml" in RECIPE_FILES
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "rlcal = rlcal.cli:main" in zf.read(entry_points).decode()


def test_the_installed_wheel_finds_its_recipes_from_any_folder(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:  # what pip install puts in site-packages, without touching the venv
        zf.extractall(site)
    probe = f"""
import json
import rlcal
from rlcal.cli import version
from rlcal.common.recipes import find_recipe
from rlcal.demo import _recipe_path
from rlcal.training.config import load_recipe

recipe = load_recipe({TOY!r})
print(json.dumps({{
    "package": rlcal.__file__,
    "found": str(find_recipe({TOY!r})),
    "pretrain_recipe": recipe.model.pretrain_recipe,
    "output_dir": str(recipe.output_dir),
    "demo": str(_recipe_path("pretrain.yaml")),
    "version": version(),
}}))
"""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    recipes = site / "rlcal" / "recipes"
    assert got["package"] == str(site / "rlcal" / "__init__.py")  # the unpacked wheel, not the checkout
    assert got["found"] == str(recipes / "toy/grpo/config_binary.yaml")
    assert got["pretrain_recipe"] == got["demo"] == str(recipes / "toy/pretrain.yaml")
    assert got["output_dir"] == "outputs/toy/grpo_binary"  # outputs stay relative to the folder rlcal runs from
    assert got["version"] == _pyproject_version()  # from the wheel's metadata, which pyproject.toml wrote


def test_an_editable_install_maps_rlcal_recipes_onto_the_recipes_folder(tmp_path, monkeypatch):
    build_meta = pytest.importorskip("setuptools.build_meta")
    src = _copy_source(tmp_path / "src")
    with monkeypatch.context() as patch:
        patch.chdir(src)  # the PEP 660 hook builds the project in the current folder, as pip install -e . does
        name = build_meta.build_editable(str(tmp_path))
    site_dir = tmp_path / "site"
    with zipfile.ZipFile(tmp_path / name) as zf:
        zf.extractall(site_dir)
    # -S: no site-packages, so the checkout's own editable finder (if any) cannot answer; this one's .pth does.
    probe = f"""
import importlib.resources, site, sys
site.addsitedir({str(site_dir)!r})
sys.path.append({sysconfig.get_paths()["purelib"]!r})
import rlcal
from rlcal.common.recipes import find_recipe
print(rlcal.__file__)
print(importlib.resources.files("rlcal.recipes"))
print(find_recipe({TOY!r}))
"""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-S", "-c", probe], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(src / "rlcal" / "__init__.py"), str(src / "recipes"), str(src / TOY)]


def _pyproject_version() -> str:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_a_checkout_finds_its_recipes_from_another_folder(tmp_path, monkeypatch, capsys):
    from rlcal.cli import main

    monkeypatch.chdir(tmp_path)
    assert shipped_recipes_dir() == ROOT / "recipes"
    assert find_recipe(TOY) == ROOT / TOY
    assert main(["train", TOY, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"pretrain_recipe: {ROOT / 'recipes/toy/pretrain.yaml'}" in printed
    assert f"resolved from {ROOT / TOY}" in printed
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_a_file_that_exists_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "recipes" / "toy" / "pretrain.yaml"
    local.parent.mkdir(parents=True)
    local.write_text("epochs: 1\n")
    assert find_recipe("recipes/toy/pretrain.yaml") == Path("recipes/toy/pretrain.yaml")  # the local one wins
    # ... except for the demo, which always runs the toy recipes it ships with
    assert shipped_recipe("toy/pretrain.yaml") == ROOT / "recipes/toy/pretrain.yaml"


def test_a_reference_is_looked_up_next_to_the_recipe_that_names_it(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pre.yaml").write_text("epochs: 1\n")
    monkeypatch.chdir(tmp_path)
    assert find_recipe("pre.yaml", referrer=project / "train.yaml") == project / "pre.yaml"
    with pytest.raises(RlcalError, match=rf"recipe not found: pre\.yaml \(nor {re.escape(str(tmp_path))}/pre\.yaml\)$"):
        find_recipe("pre.yaml", referrer=tmp_path / "train.yaml")  # next to the referrer is tmp_path: not there
    with pytest.raises(RlcalError, match=r"recipe not found: recipes/toy/nope\.yaml \(nor .*recipes/toy/nope"):
        find_recipe("recipes/toy/nope.yaml")
    with pytest.raises(RlcalError, match=r"^recipe not found: /nowhere/r\.yaml$"):
        find_recipe("/nowhere/r.yaml")
    with pytest.raises(RlcalError, match="is not shipped with this rlcal"):
        shipped_recipe("toy/nope.yaml")
