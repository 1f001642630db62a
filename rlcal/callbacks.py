"""Calibration evaluation during training: a transformers `TrainerCallback` that measures ECE and behavioral
calibration at step 0 (the base model), every N steps and at the end, and reports the drift.

Configured by the `calibration:` section of a training recipe (`CalibrationEvalConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlcal.thresholds import check_threshold

DEFAULT_THRESHOLDS = [0.0, 0.5, 0.75, 0.9]
CONFIDENCE_METHODS = ("answer_prob", "answer_prob_norm", "agreement", "verbal")


@dataclass
class CalibrationEvalConfig:
    """The `calibration:` section of a recipe. `data: null` turns the hook off."""

    data: str | None = field(default=None, metadata={"help": "Held-out QA source (local file or datasets name)."})
    split: str = field(default="train", metadata={"help": "Split of a datasets source."})
    subset: str | None = field(default=None, metadata={"help": "Subset/config name of a datasets source."})
    split_filter: str | None = field(default=None, metadata={"help": "Keep rows whose `split` column equals this."})
    every_n_steps: int = field(default=0, metadata={"help": "Evaluate every N optimizer steps; 0 = base and end only."})
    thresholds: list[float] = field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS), metadata={"help": "Confidence targets t for the sweep."}
    )
    confidence: str = field(default="answer_prob", metadata={"help": f"One of {', '.join(CONFIDENCE_METHODS)}."})
    num_samples: int = field(default=8, metadata={"help": "k sampled answers for `agreement` confidence."})
    max_samples: int | None = field(default=256, metadata={"help": "Evaluate at most this many questions."})
    max_new_tokens: int = field(default=16, metadata={"help": "Generation length for eval answers."})
    batch_size: int = field(default=32, metadata={"help": "Questions per generation batch (per process)."})
    n_bins: int = field(default=15, metadata={"help": "Equal-width bins for ECE."})

    def __post_init__(self) -> None:
        self.thresholds = [check_threshold(t) for t in self.thresholds]
        if self.confidence not in CONFIDENCE_METHODS:
            raise ValueError(f"calibration.confidence must be one of {CONFIDENCE_METHODS}, got {self.confidence!r}")
        for name in ("every_n_steps", "num_samples", "max_new_tokens", "batch_size", "n_bins"):
            value = getattr(self, name)
            if value < 0 or (value == 0 and name != "every_n_steps"):
                raise ValueError(f"calibration.{name} must be {'>= 0' if name == 'every_n_steps' else '> 0'}")
        if self.max_samples is not None and self.max_samples <= 0:
            raise ValueError("calibration.max_samples must be > 0 (or null for all)")
