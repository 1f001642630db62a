"""Why the recipes set `scale_rewards` explicitly: the exact expected GRPO gradient on "answer" vs "I don't know".

    pytest -q tests/test_advantage_scaling.py
    python tests/test_advantage_scaling.py          # prints the table in docs/training.md ("Advantage scaling")

`expected_answer_gradient` is evidence for a design decision, not library code: with the confidence-target reward,
TRL's default per-group std scaling (`scale_rewards: group`) can push a model to answer where answering loses
points on average, while `none` and `batch` follow sign(P(correct) - t). It is checked here against brute-force
enumeration, and the sign properties the docs rely on are asserted.
"""

from __future__ import annotations

import math
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.core.thresholds import penalty


def expected_answer_gradient(
    p: float, t: float, answer_rate: float, num_generations: int, scale_rewards: str
) -> float:
    """Exact expected GRPO policy gradient on the logit of "answer" (vs "I don't know") for one prompt.

    Each completion answers with probability `answer_rate` and, when it answers, is correct with probability `p`;
    rewards are +1 / 0 / -t/(1-t). The advantage is r - mean(group), divided by the group std for
    `scale_rewards="group"` (TRL's default; `batch` divides by one positive batch-wide number and has the sign of
    `none`). The score-optimal direction is sign(p - t); per-group std scaling can point the other way, which is
    why the recipes set `scale_rewards` explicitly (docs/training.md).
    """
    g, q, pen = num_generations, answer_rate, penalty(t)
    probs = (q * p, q * (1 - p), 1 - q)  # correct, wrong, abstain
    values = (1.0, -pen, 0.0)
    answered = (1.0, 1.0, 0.0)
    total = 0.0
    for c in range(g + 1):  # the advantage depends only on the counts, so sum over multinomial counts: O(G^2)
        for w in range(g + 1 - c):
            counts = (c, w, g - c - w)
            prob = math.factorial(g) / math.prod(math.factorial(k) for k in counts)
            prob *= math.prod(pk**k for pk, k in zip(probs, counts, strict=True))
            if prob == 0.0:
                continue
            mean = sum(k * v for k, v in zip(counts, values, strict=True)) / g
            scale = 1.0
            if scale_rewards == "group":
                var = sum(k * (v - mean) ** 2 for k, v in zip(counts, values, strict=True)) / (g - 1)
                scale = 1.0 / (math.sqrt(var) + 1e-4)
            total += (
                prob * scale * sum(k * (v - mean) * (a - q) for k, v, a in zip(counts, values, answered, strict=True))
            )
    return total


def brute_force_gradient(p: float, t: float, q: float, g: int, scale: str) -> float:
    """The same expectation as `expected_answer_gradient`, by enumerating all 3^g outcome sequences."""
    pen = t / (1 - t)
    probs = {"c": q * p, "w": q * (1 - p), "a": 1 - q}
    values = {"c": 1.0, "w": -pen, "a": 0.0}
    total = 0.0
    for combo in product("cwa", repeat=g):
        prob = math.prod(probs[o] for o in combo)
        rewards = [values[o] for o in combo]
        mean = sum(rewards) / g
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (g - 1))
        scale_by = 1 / (std + 1e-4) if scale == "group" else 1.0
        total += prob * sum((r - mean) * scale_by * ((o != "a") - q) for r, o in zip(rewards, combo, strict=True))
    return total


@settings(max_examples=30, deadline=None)
@given(
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.5, 0.75, 0.9]),
    st.floats(0.05, 0.95),
    st.integers(2, 5),
    st.sampled_from(["none", "group"]),
)
def test_expected_answer_gradient_matches_enumeration(p, t, q, g, scale):
    exact = expected_answer_gradient(p, t, q, g, scale)
    assert exact == pytest.approx(brute_force_gradient(p, t, q, g, scale), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([0.5, 0.75, 0.9]), st.floats(0.02, 0.3), st.floats(0.1, 0.9))
def test_unscaled_advantages_push_toward_the_score_optimal_choice(t, margin, q):
    # scale_rewards none (and batch: one positive factor) follow sign(p - t): answer iff P(correct) > t
    assert expected_answer_gradient(min(t + margin, 1.0), t, q, 8, "none") > 0
    assert expected_answer_gradient(t - margin, t, q, 8, "none") < 0


def test_group_scaling_reverses_the_decision_below_the_target():
    # the evidence for `scale_rewards: batch` in the recipes (docs/training.md): at t = 0.75 a model that is right
    # 70% of the time should abstain, but per-group std scaling pushes it to answer
    assert expected_answer_gradient(0.7, 0.75, 0.5, 8, "none") < 0
    assert expected_answer_gradient(0.7, 0.75, 0.5, 8, "group") > 0
    assert expected_answer_gradient(0.75, 0.9, 0.5, 8, "group") > 0


DOC_ROWS = ((0.5, 0.35), (0.5, 0.45), (0.5, 0.55), (0.75, 0.6), (0.75, 0.7), (0.75, 0.8), (0.9, 0.75), (0.9, 0.85),
            (0.9, 0.95))


def doc_table() -> str:
    """The docs/training.md table: groups of 8, a prompt answered half of the time."""
    lines = ["| t | P(correct) | score-optimal | `none` / `batch` | `group` |", "|---|---|---|---|---|"]
    for t, p in DOC_ROWS:
        none, group = (expected_answer_gradient(p, t, 0.5, 8, s) for s in ("none", "group"))
        best = "answer" if p > t else "abstain"
        lines.append(f"| {t} | {p:.2f} | {best} | {none:+.2f} | {group:+.2f} |".replace("-", "−"))
    return "\n".join(lines)


def test_doc_table_signs():
    # the rows the docs call out in bold: per-group scaling pushes toward answering below the target
    for t, p in ((0.75, 0.7), (0.9, 0.75), (0.9, 0.85)):
        assert expected_answer_gradient(p, t, 0.5, 8, "group") > 0 > expected_answer_gradient(p, t, 0.5, 8, "none")


if __name__ == "__main__":
    print(doc_table())
