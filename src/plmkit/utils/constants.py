"""Constants shared across the package."""

IGNORE_INDEX = -100  # a label that no loss counts (padding, prompt tokens, unlabelled positions)
