"""Evaluation: confidence extraction, the calibration and behavioral-calibration sweep, scoring, compare
and plots. Never imports training."""

# How a confidence is read off a model (see `rlcal.evaluation.confidence`). Here, not there, so that argparse and
# config validation can name the choices without importing torch.
CONFIDENCE_METHODS = ("answer_prob", "answer_prob_norm", "agreement", "verbal")
