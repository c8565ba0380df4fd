"""Tiny fine-tuned model directories (a random BERT with a WordPiece vocabulary, its task file; a random
Marian translation model and BERT-to-BERT summarization model) and their ONNX exports, made once per test
session."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

_CACHE: dict[str, Path] = {}
TEXTS = ["a wonderful film with a great cast", "dull and far too long", "Paris is in France", "John lives in Berlin",
         "the plot makes no sense at all", "an honest and moving story", "Mary met Peter in London last May"]
SIZE = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)  # a tiny BART or Marian


def randomize(model: torch.nn.Module, norms: bool = True) -> torch.nn.Module:
    """Random biases too (a graph must not lose one: zeros hide it), and logits far apart (no near ties);
    `norms` False: LayerNorms as they are (a random generator then writes something else than one token)."""
    torch.manual_seed(0)
    kept = set() if norms else {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)
                                for p in m.parameters()}
    for p in model.parameters():
        if id(p) not in kept:
            torch.nn.init.normal_(p, std=0.3)
    return model


def task_dir(task: str) -> Path:
    """A classification (labels neg / pos) or NER (BIO tags of PER and LOC) model directory; a translation
    one (Marian) or a summarization one (BERT-to-BERT)."""
    if task in _CACHE:
        return _CACHE[task]
    if task in ("translation", "summarization"):
        _CACHE[task] = seq2seq_dir(task)
        return _CACHE[task]
    from plmkit.models.bert import BertConfig, BertForSequenceClassification, BertForTokenClassification
    from plmkit.tasks.classification import ClassificationTask
    from plmkit.tasks.ner import NerTask
    from plmkit.tokenization import Tokenizer
    root = Path(tempfile.mkdtemp(prefix=f"plmkit-onnx-{task}-"))
    tokenizer = Tokenizer.train_wordpiece(TEXTS * 3, vocab_size=120, min_frequency=1)
    labels = ["neg", "pos"] if task == "classification" else ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, id2label=dict(enumerate(labels)))
    model = randomize((BertForSequenceClassification if task == "classification" else BertForTokenClassification)(config))
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    settings = {"problem_type": "single_label_classification", "sentence_pairs": False} \
        if task == "classification" else {"scheme": "BIO"}
    (ClassificationTask if task == "classification" else NerTask).of(max_length=32, **settings).save(root)
    _CACHE[task] = root
    return root


def seq2seq_dir(task: str) -> Path:
    """A random Marian translation model with a BPE vocabulary, or a random BERT-to-BERT summarization
    model with a WordPiece one, and the task file (4 beams)."""
    from plmkit.models.bert import BertConfig
    from plmkit.models.encoder_decoder import EncoderDecoderConfig, EncoderDecoderModel
    from plmkit.models.marian import MarianConfig, MarianMTModel
    from plmkit.tasks.summarization import SummarizationTask
    from plmkit.tasks.translation import TranslationTask
    from plmkit.tokenization import Tokenizer
    root = Path(tempfile.mkdtemp(prefix=f"plmkit-onnx-{task}-"))
    if task == "translation":
        tokenizer = Tokenizer.train(TEXTS * 3, 300, model="bpe", style="marian", min_frequency=1)
        model = MarianMTModel(MarianConfig(**SIZE, **MarianConfig.tokenizer_fields(tokenizer)))
    else:
        tokenizer = Tokenizer.train_wordpiece(TEXTS * 3, vocab_size=120, min_frequency=1)
        bert = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=64)
        model = EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(
            bert, bert, **EncoderDecoderConfig.tokenizer_fields(tokenizer)))
    randomize(model, norms=False).save_pretrained(root)
    tokenizer.save_pretrained(root)
    (TranslationTask if task == "translation" else SummarizationTask).of(
        max_length=32, max_target_length=10, num_beams=4, decoder_start_token_id=model.config.decoder_start_token_id
    ).save(root)
    return root


def exported(task: str) -> Path:
    """`task_dir(task)` exported by `plmkit export` with onnxruntime int8."""
    key = f"{task}.onnx"
    if key not in _CACHE:
        from plmkit.cli import main
        out = Path(tempfile.mkdtemp(prefix=f"plmkit-onnx-out-")) / task
        assert main(["export", "--model", str(task_dir(task)), "--out", str(out), "--int8", "--quiet"]) == 0
        _CACHE[key] = out
    return _CACHE[key]


def chat_dir(family: str) -> tuple[Path, Path]:
    """(a random 2-layer GPT-2 (2 heads a layer) or Llama (4 query heads in 2 key/value groups a layer) with a
    BPE tokenizer and the sft task file, as `plmkit finetune --task sft` writes one; prompt/response pairs)."""
    key = f"chat-{family}"
    if key not in _CACHE:
        import json
        from clm_helpers import PAIRS, tiny_tokenizer
        from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
        from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
        from plmkit.tasks.sft import SFTTask
        root = Path(tempfile.mkdtemp(prefix=f"plmkit-onnx-{family}-"))
        tok = tiny_tokenizer()
        ids = dict(vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        model = (GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", n_positions=64, **ids)) if family == "gpt2" else
                 LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                              **ids)))
        randomize(model).save_pretrained(root / "model")  # (logits far apart: no near ties in greedy decoding)
        tok.save_pretrained(root / "model")
        SFTTask.of(max_length=48).save(root / "model")
        (root / "pairs.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS))
        _CACHE[key] = root
    root = _CACHE[key]
    return root / "model", root / "pairs.jsonl"


def pruned_export(family: str) -> tuple[Path, Path]:
    """(`chat_dir(family)` pruned by `plmkit prune` (a quarter of the heads: layers of different head counts),
    that directory exported by `plmkit export --int8`)."""
    key = f"pruned-{family}"
    if key not in _CACHE:
        from plmkit.cli import main
        model, pairs = chat_dir(family)
        pruned, out = model.parent / "pruned", model.parent / "onnx"
        assert main(["prune", "--model", str(model), "--out", str(pruned), "--data", str(pairs), "--heads", "0.25",
                     "--ffn", "0.5", "--ffn-multiple", "1", "--batch-size", "3", "--device", "cpu", "--no-progress",
                     "--no-report", "--quiet"]) == 0
        assert main(["export", "--model", str(pruned), "--out", str(out), "--int8", "--quiet"]) == 0
        _CACHE[key] = pruned, out
    return _CACHE[key]
