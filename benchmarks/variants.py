"""Recipe variants on a finished demo's setting: post-train its pretrained model with a toy recipe plus overrides,
evaluate the warm-up model and the RL model on the demo's fixed eval set and grid, print one table row each.

    python benchmarks/variants.py --demo outputs/claims/seed_0 --reward confidence_target \
        --set warmup.steps=1000 --name more-warmup --out outputs/variants
    python benchmarks/variants.py --demo outputs/claims/seed_0 --reward binary --set warmup.abstain_fraction=0 \
        --name t-blind-answers-only --warmup-only

`--set section.key=value` (YAML value) overrides the shipped recipe `recipes/toy/<trainer>/config_<reward>.yaml`
the way `rlcal demo` runs it (same data, eval rows, grid and seed handling). `--warmup-only` stops after the
warm-up (RL steps 0) and evaluates only the warm-up model. Every row is appended to `OUT/variants.jsonl`
(variant, seed, overrides, per-model summary), so that docs/training.md's variant tables can be rebuilt from it.
The eval set and grid are the demo's: the same for every variant, fixed before any of them ran.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from rlcal.common.files import atomic_write_text
from rlcal.core.aggregate import rises_beyond_noise


def _apply(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name:
            raise SystemExit(f"variants: --set wants section.key=value, got {item!r}")
        raw[section] = {**(raw.get(section) or {}), name: yaml.safe_load(value)}
    return raw


def _row(name: str, summary: dict[str, Any]) -> str:
    rates = [summary["per_threshold"][t]["answer_rate"] for t in summary["per_threshold"]]
    mono = all(b <= a + 1e-9 for a, b in zip(rates, rates[1:], strict=False))
    accs = [summary["per_threshold"][t].get("accuracy_answered") for t in summary["per_threshold"]]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    rises = [f"{c['from']:g}→{c['to']:g}" for c in rises_beyond_noise(summary.get("behavioral_rate_changes"))]
    return (
        f"| {name} | {fmt(summary['ece'])} | {fmt(summary['behavioral_ece'])} | "
        f"{fmt(summary['behavioral_monotone_share'])} | {'yes' if mono else 'no'} | {', '.join(rises) or 'none'} | "
        f"{' '.join(fmt(r) for r in rates)} | {' '.join(fmt(a) for a in accs)} |"
    )


def _cached_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / "warmup.json").read_text())["key"]
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _same_warmup(cached: Path, used: Path) -> bool:
    """Whether training used the copied warm-up unchanged (same cache key), so the demo's evaluation of it stands."""
    key = _cached_key(cached)
    return key is not None and key == _cached_key(used)


def _prepare_run_dir(run_dir: Path, cached: Path, key: str, reuse: bool) -> bool:
    """Start the variant's folder empty, then copy the demo's warm-up into it when `reuse` and its key is `key`;
    returns whether it copied. Empty first: a warm-up left there by an earlier try with other settings would make
    train() refuse the run (variants never resume)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    if not (reuse and cached.is_dir()):
        return False
    # Paths are part of the key: a demo folder moved since it ran has another key, and its warm-up is rebuilt.
    if _cached_key(cached) != key:
        print(f"[variants] {cached} was built with other warm-up settings: building this variant's", flush=True)
        return False
    shutil.copytree(cached, run_dir / "warmup")
    return True


def main(argv: list[str] | None = None) -> int:
    from rlcal import demo
    from rlcal.training.config import load_recipe_dict, parse_recipe
    from rlcal.training.train import train
    from rlcal.training.warmup import warmup_key

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished `rlcal demo --out` folder")
    parser.add_argument("--reward", default="confidence_target")
    parser.add_argument("--trainer", default="grpo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--name", required=True, help="the variant's name in the table")
    parser.add_argument("--seed", type=int, default=None, help="default: the demo's seed")
    parser.add_argument("--warmup-only", action="store_true")
    parser.add_argument(
        "--reuse-warmup",
        action="store_true",
        help="copy the demo's cached warm-up of this reward (DIR/rl_<reward>/warmup) when the overrides leave the "
        "warm-up unchanged (its cache key decides: a changed warm-up is rebuilt) and skip re-evaluating it",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/variants"))
    args = parser.parse_args(argv)
    summary = json.loads((args.demo / "summary.json").read_text())
    seed = summary["seed"] if args.seed is None else args.seed
    rows = demo._eval_rows(args.demo / "world", None)

    raw = load_recipe_dict(demo._recipe_path(f"{args.trainer}/config_{args.reward}.yaml"))
    run_dir = args.out / f"seed_{seed}" / args.name
    raw["resume"] = "never"
    raw["model"] = {**raw["model"], "model_name_or_path": str(args.demo / "pretrained"), "pretrain_recipe": None}
    raw["data"] = {**raw["data"], "source": str(args.demo / "rl_train.jsonl"), "split_filter": None,
                   "weight_column": None}  # fmt: skip
    raw["calibration"] = {}
    raw["training"] = {**raw["training"], "output_dir": str(run_dir), "seed": seed, "report_to": [],
                       "save_strategy": "no", "logging_steps": 1}  # fmt: skip
    raw = _apply(raw, args.overrides)
    if args.warmup_only:
        raw["training"]["max_steps"] = 1  # the warm-up is what is measured; one RL step keeps train() unchanged
    recipe = parse_recipe(raw, path=f"variant:{args.name}")
    cached = args.demo / f"rl_{args.reward}" / "warmup"
    copied = _prepare_run_dir(run_dir, cached, warmup_key(recipe, recipe.model.model_name_or_path), args.reuse_warmup)
    start = time.time()
    result = train(recipe)
    print(f"[variants] {args.name} seed {seed}: trained in {time.time() - start:.0f}s", flush=True)
    reused = copied and _same_warmup(cached, run_dir / "warmup")
    models = {"warmup": (result.model_path, None)} if raw.get("warmup", {}).get("steps") and not reused else {}
    if not args.warmup_only:
        models["rl"] = (result.model_path, result.output_dir)
    lines, record = [], {"variant": args.name, "seed": seed, "reward": args.reward, "overrides": args.overrides}
    for label, (model, adapter) in models.items():
        how = demo.EVAL_OPTIONS.get(args.reward, {}) if label == "rl" else {}
        metrics, _ = demo._evaluate(f"{args.name}-{label}", model, adapter, rows, run_dir, "full", seed, **how,
                                    prompt=recipe.data.prompt_template())  # fmt: skip
        record[label] = demo.model_summary(metrics)
        lines.append(_row(f"{args.name} ({label}, seed {seed})", record[label]))
    with (args.out / "variants.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    header = (
        "| variant | ECE | behavioral ECE | monotone share | rate non-increasing | rises beyond noise | "
        "answer rate per t | accuracy on answered per t |"
    )
    text = "\n".join([header, "|---|---|---|---|---|---|---|---|", *lines])
    atomic_write_text(run_dir / "row.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
