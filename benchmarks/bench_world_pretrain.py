"""Time the default world build + tiny-LM pretraining, then measure the pretrained model's calibration by mention
count: the table in docs/world.md (and the README).

    python benchmarks/bench_world_pretrain.py                         # recipes/toy/pretrain.yaml into a temp dir
    python benchmarks/bench_world_pretrain.py --threads 2 --out bench_out
    python benchmarks/bench_world_pretrain.py --model outputs/toy/pretrained --world outputs/toy/world  # eval only

For every birthday question of the world's `eval` split the model answers greedily to the t = 0 ("best guess")
prompt; its confidence is the teacher-forced probability of that answer (the product of its token
probabilities, end-of-answer token excluded). Printed: wall time of world build and pretraining, then accuracy and
mean confidence by mention-count bucket (unseen, 1, 2-4, 5-19, 20+), ECE (15 equal-width bins), the error on
arbitrary facts (wrong answers weighted by how often a fresh question is about each person: the world's
popularity) next to the corpus singleton rate, and the abstention rate at t in {0.5, 0.75, 0.9}.
Also written to OUT: `table.md`, `results.json`, `reliability.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def answer_with_confidence(model, tokenizer, prompts: list[str], batch_size: int = 128, max_new_tokens: int = 8):
    """Greedy answers and their teacher-forced probabilities (end-of-sequence token excluded)."""
    import torch

    answers, confidences = [], []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out.sequences[:, batch["input_ids"].shape[1] :]
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)
        token_lp = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        for row, lps in zip(new.tolist(), token_lp, strict=True):
            n = row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else len(row)
            answers.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
            confidences.append(float(lps[:n].sum().exp()))
    return answers, np.array(confidences)


def idk_probability(model, tokenizer, prompts: list[str], batch_size: int = 128) -> np.ndarray:
    """P(the reply's first token is the first token of " I don't know.") for each prompt."""
    import torch

    from rlcal.world.corpus import IDK_ANSWER

    probe = prompts[0]
    first = tokenizer(probe + " " + IDK_ANSWER)["input_ids"][len(tokenizer(probe)["input_ids"])]
    tokenizer.padding_side = "left"
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**batch).logits[:, -1, :].float()
        out.append(logits.softmax(-1)[:, first].numpy())
    return np.concatenate(out)


def evaluate(
    model_dir: str | Path, world_dir: str | Path, thresholds=(0.5, 0.75, 0.9), max_questions: int = 2000
) -> dict:
    """Calibration of the pretrained model on the world's eval birthdays, by mention-count bucket."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcal.core.grading import grade
    from rlcal.core.metrics import ece, reliability_bins
    from rlcal.core.prompts import PromptTemplate
    from rlcal.world.corpus import COUNT_BUCKETS, count_bucket, load_world_stats

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [json.loads(line) for line in (Path(world_dir) / "qa.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "eval" and r["family"] == "birthday"]
    if len(rows) > max_questions:  # a seeded random subset keeps the bucket mix
        keep = np.random.default_rng(0).choice(len(rows), max_questions, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    template = PromptTemplate()
    answers, conf = answer_with_confidence(model, tokenizer, [template.render(r["question"], 0.0) for r in rows])
    outcomes = [grade(a, r["answer"], r["aliases"]) for a, r in zip(answers, rows, strict=True)]
    correct = np.array([o == "correct" for o in outcomes])
    wrong = np.array([o == "wrong" for o in outcomes])
    answered = ~np.array([o == "abstain" for o in outcomes])
    buckets = np.array([count_bucket(r["count"]) for r in rows])
    weight = np.array([r["popularity"] for r in rows])

    # Abstention propensity at each t: the probability that the reply starts with "I don't know" (the base model
    # samples it this often); greedy decoding abstains only where it exceeds the whole date branch.
    p_idk = {
        t: idk_probability(model, tokenizer, [template.render(r["question"], t) for r in rows])
        for t in (0.0, *thresholds)
    }

    table = []
    for name, _, _ in (*COUNT_BUCKETS, ("all", 0, 0)):
        mask = np.ones(len(rows), bool) if name == "all" else buckets == name
        if not mask.any():
            continue
        table.append(
            {
                "bucket": name,
                "n": int(mask.sum()),
                "accuracy": float(correct[mask].mean()),
                "mean_confidence": float(conf[mask].mean()),
                "abstain_greedy_t0": float((~answered[mask]).mean()),
                **{f"p_idk_t{t}": float(p_idk[t][mask].mean()) for t in p_idk},
            }
        )
    stats = load_world_stats(world_dir) or {}
    return {
        "table": table,
        "ece": ece(conf[answered], correct[answered]),
        "ece_all": ece(conf, correct),
        "error_weighted": float((weight * wrong).sum() / weight.sum()),
        "error_per_person": float(wrong.mean()),
        "unseen_mass_eval": float(weight[buckets == "unseen"].sum() / weight.sum()),
        "singleton_rate": stats.get("singleton_rate"),
        "singleton_rate_target": stats.get("singleton_rate_target"),
        "reliability": reliability_bins(conf[answered], correct[answered]),
        "examples": [
            {"question": r["question"], "gold": r["answer"], "answer": a, "confidence": float(c), "count": r["count"]}
            for r, a, c in list(zip(rows, answers, conf, strict=True))[:10]
        ],
    }


def render_table(result: dict, timing: dict | None) -> str:
    lines = []
    if timing:
        lines.append(
            f"World build {timing['world_s']:.1f} s + pretraining {timing['pretrain_s']:.1f} s = "
            f"{timing['total_s']:.1f} s wall, {timing['cpu_s']:.1f} s CPU ({timing['threads']} threads, {timing['steps']} steps, "
            f"{timing['parameters'] / 1e6:.2f}M parameters, ~{timing['tokens_per_second']} tokens/s; 1-min load "
            f"average {timing['load_average'][0]} before, {timing['load_average'][1]} after)."
        )
        lines.append("")
    ts = [k for k in result["table"][0] if k.startswith("p_idk_t")]
    lines.append(
        "| mention count | questions | accuracy | mean confidence | "
        + " | ".join(f"P(IDK) t={k[len('p_idk_t') :]}" for k in ts)
        + " |"
    )
    lines.append("|---|---:|---:|---:|" + "---:|" * len(ts))
    for row in result["table"]:
        cells = [row["bucket"], str(row["n"]), f"{row['accuracy']:.3f}", f"{row['mean_confidence']:.3f}"]
        cells += [f"{row[k]:.2f}" for k in ts]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"ECE (15 bins, t = 0 answers): {result['ece']:.4f}")
    lines.append(
        f"Error on arbitrary facts (popularity-weighted, t = 0): {result['error_weighted']:.3f}  vs  corpus singleton "
        f"rate {result['singleton_rate']:.3f} (target {result['singleton_rate_target']:.3f}); unseen mass of the eval "
        f"people {result['unseen_mass_eval']:.3f}; per-person error {result['error_per_person']:.3f}"
    )
    return "\n".join(lines)


def plot_reliability(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in result["reliability"] if b["count"] > 0]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.scatter(
        [b["mean_confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        s=[10 + 200 * b["count"] / max(x["count"] for x in bins) for b in bins],
        label="bins (size = count)",
    )
    ax.set_xlabel("confidence (probability of own answer)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Pretrained toy model, ECE = {result['ece']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes/toy/pretrain.yaml"))
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads; 0 = the recipe's setting (auto: all cores when idle)"
    )
    parser.add_argument("--out", default=None, help="Where world, model and results go (default: a temp dir).")
    parser.add_argument("--model", default=None, help="Evaluate this model dir instead of training (needs --world).")
    parser.add_argument("--world", default=None, help="World dir of --model.")
    parser.add_argument("--max-questions", type=int, default=2000, help="Evaluate at most this many eval questions.")
    parser.add_argument("overrides", nargs="*", help="--key value recipe overrides (after `--`).")
    args = parser.parse_args(argv)

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_world_"))
    out.mkdir(parents=True, exist_ok=True)
    timing = None
    if args.model:
        if not args.world:
            parser.error("--model needs --world")
        model_dir, world_dir = Path(args.model), Path(args.world)
    else:
        from rlcal.world.pretrain import DONE_MARKER, load_pretrain_config, pretrain

        load_before = os.getloadavg()[0]  # other jobs on the same cores slow training several-fold: report it
        overrides = [*args.overrides, "--world_dir", str(out / "world"), "--output_dir", str(out / "pretrained")]
        if args.threads:
            overrides += ["--num_threads", str(args.threads)]
        config = load_pretrain_config(args.recipe, overrides)
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        model_dir = pretrain(config)
        total, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        world_dir = Path(config.world_dir)
        done = json.loads((model_dir / DONE_MARKER).read_text())
        timing = {
            "world_s": done["world_seconds"],
            "pretrain_s": total - done["world_seconds"],
            "total_s": total,
            # CPU time is what the run costs on an otherwise idle machine with this many threads busy: with 1 thread
            # it is the idle-machine wall time, whatever else shares the cores.
            "cpu_s": cpu,
            "threads": done["threads"],
            "steps": done["steps"],
            "parameters": done["parameters"],
            "tokens_per_second": done["tokens_per_second"],
            "final_loss": done["final_loss"],
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    result = evaluate(model_dir, world_dir, max_questions=args.max_questions)
    text = render_table(result, timing)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"timing": timing, **result}, indent=2) + "\n")
    plot_reliability(result, out / "reliability.png")
    print(f"\nresults in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
