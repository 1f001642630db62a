"""The recipes shipped with rlcal. In a built wheel this folder is the package `rlcal.recipes` (pyproject.toml maps
it; there is no second copy), so `rlcal demo` and `recipes/...` paths work from any folder: see
`rlcal.common.recipes` and docs/training.md, "Where recipe paths point"."""
