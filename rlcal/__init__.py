"""rlcal: reinforcement-learning fine-tuning of language models with calibrated (confidence-target) rewards.

The pure core (`rlcal.core.grading`, `rlcal.core.rewards`, `rlcal.core.thresholds`, `rlcal.core.prompts`, `rlcal.core.metrics`,
`rlcal.evaluation.score`) imports neither torch nor TRL; the training and evaluation glue lives in modules that do.
Run `rlcal --help` for the command line.
"""

__version__ = "0.1.0"
