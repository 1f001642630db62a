"""The pure core: grading, confidence targets, prompts, rewards and metrics. No torch, no TRL."""
