"""rlcal: reinforcement-learning fine-tuning of language models with calibrated (confidence-target) rewards.

The pure core (`rlcal.core.grading`, `rlcal.core.rewards`, `rlcal.core.thresholds`, `rlcal.core.prompts`, `rlcal.core.metrics`,
`rlcal.evaluation.score`) imports neither torch nor TRL; the training and evaluation glue lives in modules that do.
Run `rlcal --help` for the command line.
"""


def __getattr__(name: str) -> str:
    # `rlcal.__version__`, read from the package metadata when asked for: pyproject.toml is the one source.
    if name == "__version__":
        from rlcal.cli import version

        return version()
    raise AttributeError(f"module 'rlcal' has no attribute {name!r}")
