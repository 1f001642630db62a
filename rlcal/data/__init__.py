"""QA data: loading local files or `datasets` sources, column mapping, confidence-target prompts."""
