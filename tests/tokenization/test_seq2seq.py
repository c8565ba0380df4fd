"""Sequence-to-sequence tokenizers: BART- and Marian-style tokenizer.json files written by transformers
load and encode as transformers does, and `text_target` gives labels, cut to their own length."""
import json

import pytest
import torch
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer as HFAutoTokenizer
from transformers import BartTokenizer, PreTrainedTokenizerFast

from plmkit.errors import DataError
from plmkit.tokenization import Tokenizer
from plmkit.utils.constants import IGNORE_INDEX

CORPUS = ["The weather is nice today.", "We like natural language processing.", "今天天气很好。",
          "我们喜欢自然语言处理。"] * 20
SOURCES = ["The weather is nice.", "We like language processing and nice weather today.", "今天很好"]
TARGETS = ["今天天气很好。", "很好", "The weather is nice today, we like it."]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Directories saved by transformers: a BartTokenizer (byte-level BPE) and a Marian-style fast
    tokenizer (Unigram, Metaspace, "A </s>"), both on vocabularies trained here."""
    root = tmp_path_factory.mktemp("hf")
    bpe = RustTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    learned = json.loads(bpe.to_str())["model"]
    BartTokenizer(vocab=learned["vocab"], merges=[tuple(m) for m in learned["merges"]]).save_pretrained(root / "bart")

    unigram = RustTokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    unigram.train_from_iterator(CORPUS, trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["</s>", "<unk>", "<pad>"], unk_token="<unk>", show_progress=False))
    unigram.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>",
                                                           special_tokens=[("</s>", 0)])
    PreTrainedTokenizerFast(tokenizer_object=unigram, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                            model_max_length=512).save_pretrained(root / "marian")
    return {"bart": root / "bart", "marian": root / "marian"}


@pytest.mark.parametrize("style, ids", [
    ("bart", dict(bos_token_id=0, pad_token_id=1, eos_token_id=2, unk_token_id=3)),
    ("marian", dict(bos_token_id=None, eos_token_id=0, unk_token_id=1, pad_token_id=2, mask_token_id=None)),
])
def test_tokenizers_written_by_transformers_load_and_encode_identically(hf_dirs, style, ids):
    ours, theirs = Tokenizer.from_pretrained(hf_dirs[style]), HFAutoTokenizer.from_pretrained(hf_dirs[style])
    assert {name: getattr(ours, name) for name in ids} == ids
    for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        assert getattr(ours, f"{name}_token_id") == getattr(theirs, f"{name}_token_id"), name
    assert ours.all_special_ids == theirs.all_special_ids and ours.model_max_length == (512 if style == "marian" else None)
    kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    for text in SOURCES + TARGETS:
        mine = ours(text, **kw)
        assert mine == {k: [tuple(o) for o in v] if k == "offset_mapping" else v for k, v in theirs(text, **kw).items()}
    kw = dict(padding=True, truncation=True, max_length=6, return_tensors="pt")
    mine, expected = ours(SOURCES, text_target=TARGETS, **kw), theirs(SOURCES, text_target=TARGETS, **kw)
    assert torch.equal(mine.input_ids, expected["input_ids"])
    assert torch.equal(mine.labels, expected["labels"].masked_fill(expected["labels"] == ours.pad_token_id,
                                                                    IGNORE_INDEX))  # ours skip padding in the loss
    assert ours.batch_decode(mine.input_ids, skip_special_tokens=True) == theirs.batch_decode(
        expected["input_ids"], skip_special_tokens=True)


def test_targets_get_their_own_length_and_truncation_is_counted(hf_dirs):
    tok = Tokenizer.from_pretrained(hf_dirs["marian"])
    full = tok(TARGETS).input_ids
    batch = tok(SOURCES, text_target=TARGETS, truncation=True, max_length=12, max_target_length=5, padding=True)
    assert [len(ids) for ids in batch.input_ids] == [12] * 3 and [len(ids) for ids in batch.labels] == [5] * 3
    for labels, whole in zip(batch.labels, full):
        kept = [i for i in labels if i != IGNORE_INDEX]
        assert kept[-1] == tok.eos_token_id and kept[:-1] == whole[:len(kept) - 1]  # cut before </s>, never it
    assert batch.truncated == {"input_ids": [len(ids) > 12 for ids in tok(SOURCES).input_ids],
                               "labels": [len(ids) > 5 for ids in full]}
    assert sum(batch.truncated["labels"]) == 2 and "decoder_input_ids" not in batch
    assert tok(text_target=TARGETS) == tok(TARGETS)  # targets alone: encoded as inputs, as in transformers
    single = tok(SOURCES[0], text_target=TARGETS[0])
    assert single.labels == full[0] and single.truncated == {"input_ids": [False], "labels": [False]}


def test_seq2seq_input_errors_name_what_is_wrong(hf_dirs):
    tok = Tokenizer.from_pretrained(hf_dirs["marian"])
    with pytest.raises(DataError, match="text has 3 but text_target 2; give one target per text"):
        tok(SOURCES, text_target=TARGETS[:2])
    with pytest.raises(DataError, match=r"target 2 of the batch has \d+ tokens, more than max_target_length=4"):
        tok(SOURCES, text_target=TARGETS, max_target_length=4)
    with pytest.raises(DataError, match=r"text_target must be a str or a non-empty list of str, got list \[\('a', 'b'\)\]"):
        tok(["x"], text_target=[("a", "b")])
    with pytest.raises(DataError, match="nothing to encode"):
        tok()
