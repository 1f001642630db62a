"""Robust, not lucky: `rlcal demo` once per seed, each claim's value per seed, whether it held, mean ± sd.

    python benchmarks/bench_claims.py --seeds 0 1 2                 # full demos (~12 min each on 2 CPU cores)
    python benchmarks/bench_claims.py --seeds 0 1 --quick --out /tmp/claims   # pipeline check (seconds per seed)
    python benchmarks/bench_claims.py --seeds 0 1 2 --rescore     # claims rebuilt from saved predictions (seconds)

Each seed changes the world (people, towns, mentions), the pretraining and RL; the eval set is each world's own
fixed eval split and the grid is the demo's, identical for every model. A seed whose demo already wrote
`OUT/seed_<k>/summary.json` with the same scale is reused (delete it to rerun). Writes `OUT/claims.json` and
`OUT/claims.md` (the table the README shows) and prints it. A claim holds "robustly" when it held on every seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from rlcal.common.files import atomic_write_text


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def claims_table(per_seed: dict[int, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """(rows, markdown): per claim, the measured value and met flag on every seed, mean ± sd of numeric values,
    and how many seeds it held on. Claims present on only some seeds (per-t accuracy needs >= 30 answers) show –."""
    order: list[str] = []
    by_claim: dict[str, dict[int, dict[str, Any]]] = {}
    for seed, summary in per_seed.items():
        for c in summary["claims"]:
            if c["claim"] not in by_claim:
                order.append(c["claim"])
                by_claim[c["claim"]] = {}
            by_claim[c["claim"]][seed] = c
    seeds = sorted(per_seed)
    rows = []
    for name in order:
        cells = by_claim[name]
        values = [_number(cells[s]["measured"]) for s in seeds if s in cells]
        values = [v for v in values if v is not None]
        mean = sum(values) / len(values) if values else None
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        rows.append(
            {
                "claim": name,
                "target": next(iter(cells.values()))["target"],
                "per_seed": {str(s): cells.get(s) and {"measured": cells[s]["measured"], "met": cells[s]["met"]}
                             for s in seeds},  # fmt: skip
                "mean": mean,
                "sd": sd,
                "held": sum(bool(cells[s]["met"]) for s in seeds if s in cells),
                "tested": sum(s in cells for s in seeds),
            }
        )

    def cell(c: dict[str, Any] | None) -> str:
        if not c:
            return "–"
        m = c["measured"]
        shown = f"{m:.3f}" if _number(m) is not None else ", ".join(f"{v:.2f}" for v in m) if isinstance(m, list) else str(m)
        return f"{shown} {'✓' if c['met'] else '✗'}"

    lines = [
        "| claim | target | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | held |",
        "|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for r in rows:
        spread = "–" if r["mean"] is None else f"{r['mean']:.3f}" + ("" if r["sd"] is None else f" ± {r['sd']:.3f}")
        lines.append(
            # A target like "|ECE drift| < ..." would split its cell: markdown wants the bars escaped.
            f"| {r['claim']} | {r['target'].replace('|', chr(92) + '|')} | "
            + " | ".join(cell(r["per_seed"][str(s)]) for s in seeds)
            + f" | {spread} | {r['held']}/{r['tested']} |"
        )
    return rows, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="outputs/bench_claims")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick pipeline (not science)")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="recompute finished seeds' metrics and claims from their saved predictions (no model runs)",
    )
    args = parser.parse_args(argv)
    if any(s < 0 for s in args.seeds):
        print("bench_claims: seeds must be >= 0", file=sys.stderr)
        return 2
    from rlcal.demo import rescore_demo, run_demo

    out = Path(args.out)
    scale = "quick" if args.quick else "full"
    per_seed = {}
    for seed in args.seeds:
        seed_dir = out / f"seed_{seed}"
        done = seed_dir / "summary.json"
        summary = json.loads(done.read_text()) if done.is_file() else None
        if summary is None or summary.get("scale") != scale:
            print(f"[bench_claims] seed {seed}: running rlcal demo{' --quick' if args.quick else ''}", flush=True)
            summary = run_demo(seed_dir, quick=args.quick, seed=seed)
        elif args.rescore:
            print(f"[bench_claims] seed {seed}: rescoring {seed_dir} from its predictions", flush=True)
            summary = rescore_demo(seed_dir)
        else:
            print(f"[bench_claims] seed {seed}: reusing {done}", flush=True)
        per_seed[seed] = summary
    rows, table = claims_table(per_seed)
    atomic_write_text(out / "claims.json", json.dumps({"scale": scale, "seeds": args.seeds, "claims": rows}, indent=2))
    atomic_write_text(out / "claims.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
