"""Constants shared across the package."""

IGNORE_INDEX = -100  # a label that no loss counts (padding, prompt tokens, unlabelled positions)
DEFAULT_VOCAB_SIZE = 8192  # of a tokenizer that pretraining trains on its corpus
PAD_TOKEN = "<|pad|>"  # the pad token plmkit gives byte-level BPE tokenizers (GPT-2's has none)

MAX_SEED = 2**64 - 1  # the largest seed torch.manual_seed takes
