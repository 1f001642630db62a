"""PPO in the demo's setting: the toy PPO recipes post-train a demo run's pretrained model on its RL data, and each
result is evaluated on that run's fixed eval set and grid, with the answer probability and with the critic.

    python benchmarks/ppo_toy.py --demo outputs/claims/seed_0 --out outputs/ppo_toy    # after `rlcal demo`

`--demo` is a finished `rlcal demo --out DIR` (its world, pretrained model, rl_train.jsonl and eval/base metrics).
For reward in binary, confidence_target: `recipes/toy/ppo/config_<reward>.yaml` as `rlcal demo` runs the GRPO
ones (same data, warm-up and completion budget), then `rlcal eval` with `--confidence answer_prob` and
`--confidence critic` (the value head at the end of the t = 0 prompt) on the demo's eval questions. Prints and
writes `OUT/ppo.md`: ECE (drift from the demo's base), AUROC, behavioral ECE, per-t answer rate. One seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rlcal.cli import main as cli
from rlcal.common.files import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    from rlcal import demo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished `rlcal demo --out` folder")
    parser.add_argument("--out", type=Path, default=Path("outputs/ppo_toy"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    base = json.loads((args.demo / "eval" / "base" / "metrics.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("world", "pretrained"):
        if not (args.demo / name).is_dir():
            print(f"ppo_toy: {args.demo} has no {name}/: run `rlcal demo --out {args.demo}` first", file=sys.stderr)
            return 2
    rows = demo._eval_rows(args.demo / "world", None)
    eval_file = args.out / "eval.jsonl"
    atomic_write_text(eval_file, "".join(json.dumps(r) + "\n" for r in rows))
    (args.out / "rl_train.jsonl").write_bytes((args.demo / "rl_train.jsonl").read_bytes())
    grid = ",".join(str(t) for t in demo.DEMO_THRESHOLDS)
    lines = [f"# PPO on the demo's setting ({args.demo}, seed {args.seed})", "",
             f"Base model ECE {base['ece']:.3f}. Eval: {len(rows)} questions, t ∈ {{{grid}}}.", "",
             "| model | confidence | ECE | drift | AUROC | behavioral ECE | answer rate per t |", "|---|---|---|---|---|---|---|"]
    for reward in ("binary", "confidence_target"):
        start = time.time()
        model_path, adapter = demo._train(reward, args.demo / "pretrained", args.out, "full", args.seed, trainer="ppo")
        print(f"[ppo_toy] trained ppo {reward} in {time.time() - start:.0f}s", flush=True)
        for confidence in ("answer_prob", "critic"):
            out = args.out / "eval" / f"ppo_{reward}_{confidence}"
            argv = ["eval", "--model", model_path, "--adapter", adapter, "--data", str(eval_file), "--thresholds",
                    grid, "--max-new-tokens", "12", "--confidence", confidence, "--out", str(out), "--device", "cpu"]
            if cli(argv) != 0:
                return 1
            m = json.loads((out / "metrics.json").read_text())
            rates = ", ".join(f"{m['per_threshold'][k]['answer_rate']:.2f}" for k in m["per_threshold"])
            lines.append(f"| ppo {reward} | {confidence} | {m['ece']:.3f} | {m['ece'] - base['ece']:+.3f} | "
                         f"{m['auroc']:.3f} | {m['behavioral_ece']:.3f} | {rates} |")
    atomic_write_text(args.out / "ppo.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
