"""rlcal: reinforcement-learning fine-tuning of language models with calibrated (confidence-target) rewards.

The pure core (`rlcal.grading`, `rlcal.rewards`, `rlcal.thresholds`, `rlcal.prompts`, `rlcal.metrics`,
`rlcal.score`) imports neither torch nor TRL; the training and evaluation glue lives in modules that do.
Run `rlcal --help` for the command line.
"""

__version__ = "0.1.0"
