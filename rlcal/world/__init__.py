"""The embedded world: a synthetic arbitrary-facts corpus, its tokenizer and tiny LM, pretraining and the
singleton-rate analysis."""
