"""Plots for calibration results (matplotlib, Agg backend; PNGs written atomically by rlcal.common.files).

    from rlcal.evaluation.plots import reliability_diagram, sweep_plot
    reliability_diagram({"base": metrics["reliability"]}, "reliability.png", ece={"base": metrics["ece"]})
    sweep_plot({"base": base["per_threshold"], "rl": rl["per_threshold"]}, "answer_rate.png")

`reliability_diagram` overlays one or more series of reliability bins (`rlcal.core.metrics.reliability_bins`): accuracy
against mean confidence per bin (marker area ~ bin size) over the diagonal of perfect calibration, and below it
the share of answers per confidence bin. `sweep_plot` draws, against the confidence target t, the answer rate and
the accuracy on answered questions (with the line accuracy = t that a behaviorally calibrated model stays above),
optionally next to ideal-policy curves (dashed). Used by `rlcal eval`, `rlcal compare` and the training callback.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlcal.common.files import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display on servers; a no-op when a backend is already chosen
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    """Render `fig` as PNG in memory, then write it atomically (readers never see half a PNG); closes the figure."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def reliability_diagram(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    title: str | None = None,
    ece: Mapping[str, float | None] | None = None,
) -> Path:
    """Overlaid reliability diagrams, one per named series of bins; returns the PNG path."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    width = 1.0 / max(len(series), 1)
    for k, (label, bins) in enumerate(series.items()):
        full = [b for b in bins if b.get("count")]
        name = label if not ece or ece.get(label) is None else f"{label} (ECE {ece[label]:.3f})"
        if not full:
            ax.plot([], [], marker="o", label=f"{name}: no data")
            continue
        total = sum(b["count"] for b in full)
        conf = [b["mean_confidence"] for b in full]
        acc = [b["accuracy"] for b in full]
        sizes = [20 + 300 * b["count"] / total for b in full]
        (line,) = ax.plot(conf, acc, marker="", linewidth=1.5, label=name)
        ax.scatter(conf, acc, s=sizes, color=line.get_color(), alpha=0.7, zorder=3)
        # Histogram of answers per uniform bin; bars of several series sit side by side inside each bin.
        for b in full:
            lo, hi = b["lo"], b["hi"]
            if lo is None or hi is None:
                continue
            bin_width = max(hi - lo, 1.0 / 60)
            left = lo if hi > lo else 1.0 - bin_width  # the [1, 1] bin (confidence exactly 1) is drawn inside the axes
            hist.bar(
                left + k * width * bin_width,
                b["count"] / total,
                width=width * bin_width,
                align="edge",
                color=line.get_color(),
                alpha=0.7,
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.set_xlabel("confidence")
    hist.set_ylabel("share")
    hist.grid(alpha=0.3)
    return _save(fig, path)


def _curve(per_threshold: Mapping[str, Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = sorted((float(t), m.get(key)) for t, m in per_threshold.items())
    return [t for t, v in points if v is not None], [v for _, v in points if v is not None]


def sweep_plot(
    series: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: str | Path,
    ideal: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    title: str | None = None,
) -> Path:
    """Answer rate and accuracy-on-answered against t, per named series (`per_threshold`-shaped dicts). `ideal`
    maps series names to their ideal-policy curves, drawn dashed in the series' colour. Returns the PNG path."""
    plt = _pyplot()
    fig, (rate_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    colors: dict[str, str] = {}
    for label, per_t in series.items():
        t, rate = _curve(per_t, "answer_rate")
        (line,) = rate_ax.plot(t, rate, "-", marker="o", label=label)
        colors[label] = line.get_color()
        t, acc = _curve(per_t, "accuracy_answered")
        acc_ax.plot(t, acc, "-", marker="o", color=colors[label], label=label)
    for label, per_t in (ideal or {}).items():
        style = {"color": colors.get(label), "marker": "x", "linestyle": "--", "label": f"{label}: ideal"}
        rate_ax.plot(*_curve(per_t, "answer_rate"), **style)
        acc_ax.plot(*_curve(per_t, "accuracy_answered"), **style)
    acc_ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="accuracy = t")
    rate_ax.set(xlabel="confidence target t", ylabel="answer rate", xlim=(-0.02, 1), ylim=(-0.02, 1.02))
    acc_ax.set(xlabel="confidence target t", ylabel="accuracy on answered", xlim=(-0.02, 1), ylim=(-0.02, 1.02))
    rate_ax.set_title("Answer rate vs t")
    acc_ax.set_title("Accuracy on answered vs t")
    for a in (rate_ax, acc_ax):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
