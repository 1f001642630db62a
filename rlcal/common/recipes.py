"""Where recipe files are found, so `rlcal train`, `rlcal pretrain` and `rlcal demo` work from any folder, with an
installed rlcal as well as in a checkout.

    from rlcal.common.recipes import find_recipe, shipped_recipe
    find_recipe("recipes/toy/grpo/config_binary.yaml")    # as given if that file exists, else the shipped one
    shipped_recipe("toy/pretrain.yaml")                    # always the recipe shipped with rlcal

The rule (docs/training.md, "Where recipe paths point"): a recipe path that names an existing file (absolute, or
relative to the folder rlcal runs from) is used as given. Otherwise a relative path is looked up next to the
recipe that names it (for references inside a recipe, such as `model.pretrain_recipe`), and then, if it starts
with `recipes/`, among the recipes shipped with rlcal. Those are the checkout's `recipes/` folder itself, which a
built wheel carries as the package `rlcal.recipes` (pyproject.toml maps that package onto the folder: one copy).
Paths *inside* recipes that name outputs (`output_dir`, `world_dir`, `data.source`) stay relative to the folder
rlcal runs from. Test: `pytest tests/test_packaging.py`.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from rlcal.common.errors import RlcalError

PREFIX = "recipes"


def shipped_recipes_dir() -> Path | None:
    """The folder of recipes shipped with rlcal: a checkout's own `recipes/` when rlcal runs from a source tree
    (plain clone or editable install), else the installed package `rlcal.recipes`; None if neither is there."""
    source = Path(__file__).resolve().parents[2] / PREFIX
    if (source / "__init__.py").is_file() and (source.parent / "pyproject.toml").is_file():
        return source
    try:
        root = importlib.resources.files(f"rlcal.{PREFIX}")
    except ModuleNotFoundError:
        return None
    # A zipped install would give a non-Path Traversable; recipes are handed to YAML/TrlParser as file paths.
    return root if isinstance(root, Path) else None


def shipped_recipe(name: str) -> Path:
    """The shipped recipe `name` (e.g. "toy/pretrain.yaml"); an `RlcalError` if this rlcal has no such recipe."""
    root = shipped_recipes_dir()
    path = root / name if root is not None else None
    if path is None or not path.is_file():
        where = f"in {root}" if root is not None else "(no recipes folder or rlcal.recipes package found)"
        raise RlcalError(f"the recipe {PREFIX}/{name} is not shipped with this rlcal {where}")
    return path


def find_recipe(path: str | os.PathLike[str], referrer: str | os.PathLike[str] | None = None) -> Path:
    """The recipe file `path` names, by the rule in the module docstring; `referrer` is the recipe file that
    mentions it, if any. A path found nowhere is one `RlcalError` listing where it was looked for."""
    given = Path(path)
    if given.is_file():
        return given
    candidates = []
    if not given.is_absolute():
        if referrer is not None:
            candidates.append(Path(referrer).parent / given)
        root = shipped_recipes_dir()
        if root is not None and given.parts[:1] == (PREFIX,) and len(given.parts) > 1:
            candidates.append(root.joinpath(*given.parts[1:]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    also = f" (nor {', '.join(str(c) for c in candidates)})" if candidates else ""
    raise RlcalError(f"recipe not found: {path}{also}")
