"""What a tokenizer refuses where it enters: hand-edited tokenizer files (each value by type, the two
config files agreeing, special tokens in the vocabulary and where the tokenizer puts them), a str
where a list of tokens goes, vocabulary sizes the trainers cannot hold, and misused methods."""
import re
import sys
from pathlib import Path

import pytest
import torch

from plmkit.errors import ConfigError, DataError
from plmkit.tokenization import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checks_helpers import TEXTS, edit_json, wordpiece  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok")
    wordpiece().save_pretrained(directory)
    return directory


@pytest.fixture
def copy(saved, tmp_path):
    import shutil
    return Path(shutil.copytree(saved, tmp_path / "tok"))


CONFIG, MAP = "tokenizer_config.json", "special_tokens_map.json"


@pytest.mark.parametrize("file, changes, message", [
    (CONFIG, {"do_lower_case": "yes"}, r"tokenizer_config.json: do_lower_case must be bool or None, got 'yes'"),
    (CONFIG, {"strip_accents": "maybe"}, r"tokenizer_config.json: strip_accents must be bool or None"),
    (CONFIG, {"model_max_length": -1}, r"tokenizer_config.json: model_max_length must be a whole number >= 1"),
    (CONFIG, {"padding_side": "up"}, r"tokenizer_config.json: padding_side must be 'right' or 'left', got 'up'"),
    (MAP, {"additional_special_tokens": "[X]"},
     r"special_tokens_map.json: additional_special_tokens must be a list of tokens, got str '\[X\]'; a single "
     r"token is a list of one"),
    (MAP, {"bogus_token": "[X]"}, r"special_tokens_map.json: bogus_token '\[X\]' is not in the tokenizer's "
                                  r"vocabulary; name a token of it"),  # (a named token: plmkit adds no token)
    (CONFIG, {"image_token": {"content": "[NOPE]"}},
     r"tokenizer_config.json: image_token '\[NOPE\]' is not in the tokenizer's vocabulary"),
    (CONFIG, {"image_token": {"id": 3}}, r"tokenizer_config.json: image_token must be a token .*got dict"),
    (CONFIG, {"image_token": "[MASK]", "extra_special_tokens": {"image_token": "[UNK]"}},
     r"tokenizer_config.json: image_token is '\[MASK\]', but extra_special_tokens gives image_token '\[UNK\]'"),
    (CONFIG, {"extra_special_tokens": {"image_token": "[NOPE]"}},
     r"tokenizer_config.json: extra_special_tokens image_token '\[NOPE\]' is not in the tokenizer's vocabulary"),
    (CONFIG, {"extra_special_tokens": {"pad_token": "[PAD]"}},
     r"tokenizer_config.json: extra_special_tokens: 'pad_token' cannot name an extra special token"),
    (CONFIG, {"extra_special_tokens": {"image_token": 3}},
     r"tokenizer_config.json: extra_special_tokens: image_token must be a token .*got int 3"),
    (MAP, {"pad_token": 5}, r"special_tokens_map.json: pad_token must be a token .*got int 5"),
    (MAP, {"additional_special_tokens": ["[NOTINVOCAB]"]},
     r"special_tokens_map.json: additional_special_tokens '\[NOTINVOCAB\]' is not in the tokenizer's vocabulary"),
    (CONFIG, {"pad_token": "[NOTINVOCAB]"}, r"tokenizer_config.json gives pad_token '\[NOTINVOCAB\]', but "
                                             r".*special_tokens_map.json gives '\[PAD\]': make the two files agree"),
    (CONFIG, {"cls_token": "[SEP]"}, r"tokenizer_config.json gives cls_token '\[SEP\]', but .*'\[CLS\]'"),
])
def test_hand_edited_files_are_refused_by_name(copy, file, changes, message):
    edit_json(copy / file, **changes)
    with pytest.raises(ConfigError, match=message):
        Tokenizer.from_pretrained(copy)


@pytest.mark.parametrize("map_named", [{"image_token": "[UNK]"}, {"extra_special_tokens": {"image_token": "[UNK]"}}])
def test_a_named_token_the_two_files_give_differently_is_refused_naming_both(copy, map_named):
    edit_json(copy / CONFIG, image_token="[MASK]")
    edit_json(copy / MAP, **map_named)
    key = "image_token" if "image_token" in map_named else "extra_special_tokens image_token"
    with pytest.raises(ConfigError, match=rf"tokenizer_config.json: image_token is '\[MASK\]', but .*"
                                          rf"special_tokens_map.json: {key} is '\[UNK\]': make the two files agree"):
        Tokenizer.from_pretrained(copy)
    edit_json(copy / MAP, image_token="[MASK]", extra_special_tokens=None)  # the same token: one named token
    assert Tokenizer.from_pretrained(copy).named_special_tokens == {"image_token": "[MASK]"}


@pytest.mark.parametrize("key, token, place", [("sep_token", "the", "after"), ("cls_token", "[SEP]", "before")])
def test_cls_and_sep_must_be_what_the_tokenizer_puts_around_a_text(copy, key, token, place):
    for file in (CONFIG, MAP):
        edit_json(copy / file, **{key: token})
    wrapping = "[SEP]" if key == "sep_token" else "[CLS]"
    with pytest.raises(ConfigError, match=rf"special_tokens_map.json: {key} is '{re.escape(token)}', but the "
                                          rf"tokenizer puts '{re.escape(wrapping)}' {place} each text"):
        Tokenizer.from_pretrained(copy)
    for file in (CONFIG, MAP):
        edit_json(copy / file, **{key: wrapping})
    with pytest.raises(ConfigError, match=rf"Tokenizer.from_pretrained: {key} is"):
        Tokenizer.from_pretrained(copy, **{key: token})


def _language_code_dir(directory: Path, first: str) -> Path:
    """A saved wordpiece tokenizer whose post-processor puts `first` (not cls_token) before each text."""
    from tokenizers import processors
    tok = wordpiece()
    tok.add_special_tokens({"additional_special_tokens": ["eng_Latn", "fra_Latn"]})
    backend = tok.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single=f"{first} $A [SEP]", pair=f"{first} $A $B [SEP]",
        special_tokens=[(t, backend.token_to_id(t)) for t in (first, "[SEP]")])
    tok.tokenizer_class = "PreTrainedTokenizerFast"
    tok.save_pretrained(directory)
    return directory


def test_a_language_code_before_the_text_loads_as_in_transformers(tmp_path, caplog):
    from transformers import AutoTokenizer
    caplog.set_level("INFO", logger="plmkit")
    directory = _language_code_dir(tmp_path / "nllb", "eng_Latn")
    ours, theirs = Tokenizer.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)
    assert ours.cls_token == theirs.cls_token == "[CLS]"
    for text in TEXTS:
        assert ours(text).input_ids == theirs(text)["input_ids"]
    assert ours.convert_ids_to_tokens(ours("a").input_ids)[0] == "eng_Latn"
    assert "the tokenizer puts 'eng_Latn' before each text" in caplog.text
    with pytest.raises(ConfigError, match=r"cls_token is '\[CLS\]', but the tokenizer puts '\[MASK\]' before"):
        Tokenizer.from_pretrained(_language_code_dir(tmp_path / "mask", "[MASK]"))  # another role's token

@pytest.mark.parametrize("key, value, message", [
    ("add_prefix_space", True, r"add_prefix_space is True, but plmkit does not apply add_prefix_space here "
                               r"\(transformers applies it for GPT2Tokenizer, RobertaTokenizer, BartTokenizer only, "
                               r"not for tokenizer_class 'PreTrainedTokenizerFast'\): tokenizer.json's pre_tokenizer "
                               r"decides it \(ByteLevel .*gives False"),
    ("trim_offsets", False, r"trim_offsets is False, but plmkit does not apply trim_offsets here .*: "
                            r"tokenizer.json's post_processor decides it .*gives True"),
    ("split_special_tokens", True, r"split_special_tokens is True, but plmkit does not apply split_special_tokens: "
                                   r"special tokens in a text are always kept whole")])
def test_options_plmkit_does_not_apply_are_refused_unless_tokenizer_json_agrees(tmp_path, key, value, message):
    """For PreTrainedTokenizerFast, which transformers builds from tokenizer.json as it is (ignoring them)."""
    Tokenizer.train(TEXTS, 300, model="byte-bpe", style="bart").save_pretrained(tmp_path)
    edit_json(tmp_path / CONFIG, tokenizer_class="PreTrainedTokenizerFast", **{key: value})
    with pytest.raises(ConfigError, match=rf"tokenizer_config.json: {message}"):
        Tokenizer.from_pretrained(tmp_path)
    edit_json(tmp_path / CONFIG, **{key: not value})  # what tokenizer.json does: accepted
    assert Tokenizer.from_pretrained(tmp_path)("a b").input_ids

def test_a_str_is_not_split_into_tokens():
    with pytest.raises(ConfigError, match=r"special_tokens must be a list of tokens, got str '\[PAD\]'"):
        Tokenizer.train(TEXTS, 60, special_tokens="[PAD]")
    tok = wordpiece()
    with pytest.raises(ConfigError, match=r"add_special_tokens: additional_special_tokens must be a list of tokens"):
        tok.add_special_tokens({"additional_special_tokens": "[X]"})
    assert tok.add_tokens("filmic") == 1 and tok.convert_ids_to_tokens(len(tok) - 1) == "filmic"  # one token


def test_vocabulary_sizes_the_trainers_cannot_hold_are_refused():
    for size in (5 * 10**9, 10**12, 2**24 + 1):
        with pytest.raises(ConfigError, match=r"vocab_size=[\d,]+ is more than 16,777,216"):
            Tokenizer.train(TEXTS, size)
    with pytest.raises(ConfigError, match=r"vocab_size=True must be an int"):
        Tokenizer.train(TEXTS, True)


def test_training_arguments_that_do_not_apply_are_refused():
    with pytest.raises(ConfigError, match=r"min_frequency \(--min-frequency\) is for model wordpiece, bpe, "
                                          r"byte-bpe, not unigram"):
        Tokenizer.train(TEXTS, 300, model="unigram", min_frequency=5)
    with pytest.raises(ConfigError, match=r"lowercase \(--no-lowercase\) is for model wordpiece, not byte-bpe"):
        Tokenizer.train(TEXTS, 300, model="byte-bpe", lowercase=False)
    with pytest.raises(ConfigError, match=r"min_frequency \(--min-frequency\) must be an integer >= 0, got int -1"):
        Tokenizer.train(TEXTS, 60, min_frequency=-1)
    for corpus in (None, 5):
        with pytest.raises(DataError, match=r"the corpus must be a path, a list of paths or an iterable of texts"):
            Tokenizer.train(corpus, 60)


def test_fields_that_name_no_jsonl_are_refused_and_named_for_plain_files(tmp_path, caplog):
    (tmp_path / "a.txt").write_text("\n".join(TEXTS) + "\n")
    (tmp_path / "b.jsonl").write_text("".join(f'{{"de": "{t}", "en": "{t}"}}\n' for t in TEXTS))
    with pytest.raises(ConfigError, match=r"fields de,en \(--fields\) name JSONL fields, but the corpus is plain "
                                          r"text \(.*a.txt\)"):
        Tokenizer.train([tmp_path / "a.txt"], 60, fields=["de", "en"])
    Tokenizer.train([tmp_path / "a.txt", tmp_path / "b.jsonl"], 60, fields=["de", "en"])
    assert "they do not apply to" in caplog.text and "a.txt (plain text" in caplog.text


@pytest.mark.parametrize("call, error, message", [
    (lambda t: t.convert_ids_to_tokens("5"), DataError, r"ids must be an int, a list of ints or a tensor of ids, "
                                                         r"got str '5'"),
    (lambda t: t.convert_ids_to_tokens(-1), DataError, r"token id -1 is out of range"),
    (lambda t: t.convert_ids_to_tokens([[1, 2]]), DataError, r"ids must be an int, a list of ints"),
    (lambda t: t.decode(None), DataError, r"ids must be an int, a list of ints .*got NoneType None"),
    (lambda t: t.convert_tokens_to_ids(None), DataError, r"convert_tokens_to_ids: tokens must be a str or a list"),
    (lambda t: t.convert_tokens_to_ids(5), DataError, r"convert_tokens_to_ids: tokens must be a str or a list"),
    (lambda t: t.tokenize(None), DataError, r"tokenize: text must be a str, got NoneType"),
    (lambda t: t.add_tokens(None), DataError, r"add_tokens: tokens must be a str or a list of str"),
    (lambda t: t.add_tokens(5), DataError, r"add_tokens: tokens must be a str or a list of str"),
    (lambda t: t.add_special_tokens(["[X]"]), ConfigError, r"add_special_tokens takes a dict such as"),
    (lambda t: t("a", max_length="2"), ConfigError, r"max_length must be an integer >= 1 or None, got str '2'"),
    (lambda t: t("a", max_length=0), ConfigError, r"max_length must be an integer >= 1 or None, got int 0"),
    (lambda t: t(5), DataError, r"tokenizer input must be a str or a non-empty list of str, got int 5"),
    (lambda t: t(["a", 5]), DataError, r"batch item 1 is tuple \(5, None\); expected a str"),
    (lambda t: t(["a", "b \ud800"]), DataError, r"tokenizer input 1: the text holds a lone surrogate '\\ud800' at "
                                                r"character 2"),
    (lambda t: t("a", padding=True, pad_to_multiple_of=0), ConfigError, r"pad_to_multiple_of must be an integer >= 1"),
    (lambda t: setattr(t, "model_max_length", "x"), ConfigError, r"model_max_length must be an integer >= 1"),
    (lambda t: Tokenizer.from_pretrained(t.dir, model_max_length="5"), ConfigError,
     r"Tokenizer.from_pretrained: model_max_length must be int or float or None, got '5'"),
    (lambda t: Tokenizer.from_pretrained(None), Exception, r"the tokenizer directory must be the path of a directory"),
    (lambda t: t.save_pretrained(""), ConfigError, r"empty path for save_pretrained\(directory\)"),
    (lambda t: t.save_pretrained(t.dir / "tokenizer.json"), ConfigError, r"cannot write into directory .*tokenizer.json "
                                                                          r"\(it is a file\)"),
])
def test_misused_methods_say_what_they_take(saved, call, error, message):
    tok = Tokenizer.from_pretrained(saved)
    tok.dir = saved
    with pytest.raises(error, match=message):
        call(tok)
    assert tok.convert_ids_to_tokens(torch.tensor(2)) == tok.convert_ids_to_tokens(2)
