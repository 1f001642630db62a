"""Evaluation: confidence extraction, the calibration and behavioral-calibration sweep, scoring, compare
and plots. Never imports training."""

# How a confidence is read off a model (see `rlcal.evaluation.confidence`). Here, not there, so that argparse and
# config validation can name the choices without importing torch.
# `critic`: the value head of a `trainer: ppo` run at the end of the t = 0 prompt (`rlcal.evaluation.critic`).
CONFIDENCE_METHODS = ("answer_prob", "answer_prob_norm", "agreement", "verbal", "critic")

# How a decision to answer is made at each confidence target t: `prompt` states t in the prompt and keeps the
# model's reply (the threshold-in-prompt route); `posthoc` prompts once at t = 0 and abstains iff the chosen
# confidence is <= t (the stated-confidence and reference routes: t applied after generation).
POLICIES = ("prompt", "posthoc")
