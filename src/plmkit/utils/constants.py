"""Constants shared across the package."""

IGNORE_INDEX = -100  # a label that no loss counts (padding, prompt tokens, unlabelled positions)
DEFAULT_VOCAB_SIZE = 8192  # of a tokenizer that pretraining trains on its corpus
# the largest vocabulary a tokenizer may be trained to: 64 times the largest in use (256k); the Rust
# trainers reserve memory for vocab_size entries up front, so 2**32 and more abort the process
MAX_VOCAB_SIZE = 2**24
PAD_TOKEN = "<|pad|>"  # the pad token plmkit gives byte-level BPE tokenizers (GPT-2's has none)

MAX_SEED = 2**63 - 1  # the largest seed plmkit takes (torch's limit is 2**64 - 1: room for the offsets of derived seeds)
# Decoding settings Hugging Face reads from generation_config.json, or from config.json where older
# checkpoints keep them (num_beams, no_repeat_ngram_size ...): generate()'s defaults (plmkit.generation)
GENERATION_KEYS = frozenset({
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
    "num_beams", "length_penalty", "early_stopping", "num_return_sequences", "repetition_penalty",
    "no_repeat_ngram_size", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id",
    "bos_token_id", "eos_token_id", "pad_token_id",
})
