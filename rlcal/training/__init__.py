"""Training: recipe config, TRL trainers with calibrated rewards, warm-up, callbacks and W&B."""
