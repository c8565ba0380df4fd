"""plmkit: a small, readable and fast PyTorch library for pre-trained language models.

    from plmkit import BertTokenizer, BertForSequenceClassification
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# plmkit logs to the "plmkit" logger and installs no handler: with none configured, Python's
# last-resort handler shows warnings and errors on stderr; `plmkit` (the CLI) shows info lines too.

# Public names, imported on first use so `import plmkit` stays light.
_EXPORTS = {
    "plmkit.models": ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM",
                      "AutoModelForPreTraining", "AutoModelForQuestionAnswering", "AutoModelForSequenceClassification",
                      "AutoModelForTokenClassification", "AutoModelForSeq2SeqLM", "SentenceTransformerFiles",
                      "sentence_embeddings"],
    "plmkit.models.base": ["PreTrainedModel"],
    "plmkit.models.config": ["ModelConfig"],
    "plmkit.models.bert": ["BertConfig", "BertModel", "BertForPreTraining", "BertForMaskedLM",
                           "BertForNextSentencePrediction", "BertForSequenceClassification",
                           "BertForTokenClassification", "BertForQuestionAnswering", "BertForRelationClassification",
                           "BertLMHeadModel"],
    "plmkit.models.gpt2": ["GPT2Config", "GPT2Model", "GPT2LMHeadModel"],
    "plmkit.models.llama": ["LlamaConfig", "LlamaModel", "LlamaForCausalLM"],
    "plmkit.models.bart": ["BartConfig", "BartModel", "BartForConditionalGeneration"],
    "plmkit.models.marian": ["MarianConfig", "MarianModel", "MarianMTModel"],
    "plmkit.models.encoder_decoder": ["EncoderDecoderConfig", "EncoderDecoderModel"],
    "plmkit.pipelines": ["pipeline"],
    "plmkit.tokenization": ["Tokenizer", "AutoTokenizer"],
}
# transformers' per-family tokenizer names: one plmkit Tokenizer (backed by `tokenizers`) reads them all
_ALIASES = {f"{family}Tokenizer{fast}": ("plmkit.tokenization", "Tokenizer")
            for family in ("Bert", "GPT2", "Llama", "Bart", "Marian") for fast in ("", "Fast")}
_WHERE = {name: (module, name) for module, names in _EXPORTS.items() for name in names} | _ALIASES

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'plmkit' has no attribute {name!r}")
    module, attr = _WHERE[name]
    return getattr(importlib.import_module(module), attr)
