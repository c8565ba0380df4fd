"""Constants shared across the package."""

IGNORE_INDEX = -100  # a label that no loss counts (padding, prompt tokens, unlabelled positions)
DEFAULT_VOCAB_SIZE = 8192  # of a tokenizer that pretraining trains on its corpus
