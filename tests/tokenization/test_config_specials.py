"""Special tokens that configs (or from_pretrained's keywords) name from the vocabulary: registered as
special added tokens, as transformers does, and written so that both libraries read them alike."""
import json
import shutil

import pytest
from transformers import AutoTokenizer as HFAutoTokenizer

from plmkit.tokenization import Tokenizer

TEXT = "hello [unused0] x [unused1] world"


def agree(ours: Tokenizer, theirs) -> None:
    ids = theirs(TEXT, return_special_tokens_mask=True)
    assert dict(ours(TEXT, return_special_tokens_mask=True)) == dict(ids)
    assert ours.decode(ids["input_ids"], skip_special_tokens=True) == theirs.decode(ids["input_ids"],
                                                                                    skip_special_tokens=True)
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)


@pytest.fixture
def minilm_copy(minilm_dir, tmp_path):
    return shutil.copytree(minilm_dir, tmp_path / "minilm", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))


def test_config_specials_from_the_vocabulary_are_kept_whole_and_skipped(minilm_copy):
    config_file = minilm_copy / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "pad_token": "[unused0]",
                                       "additional_special_tokens": ["[unused1]"]}))
    for file in ("special_tokens_map.json",):
        (minilm_copy / file).unlink(missing_ok=True)
    ours, theirs = Tokenizer.from_pretrained(minilm_copy), HFAutoTokenizer.from_pretrained(minilm_copy)
    assert ours.tokenize(TEXT) == ["hello", "[unused0]", "x", "[unused1]", "world"]
    agree(ours, theirs)


def test_from_pretrained_special_token_keywords_are_kept_whole_and_skipped(minilm_dir):
    options = dict(pad_token="[unused0]", additional_special_tokens=["[unused1]"])
    agree(Tokenizer.from_pretrained(minilm_dir, **options), HFAutoTokenizer.from_pretrained(minilm_dir, **options))


def test_a_special_token_set_from_the_vocabulary_is_saved_as_one(minilm_dir, tmp_path):
    tok = Tokenizer.from_pretrained(minilm_dir)
    tok.pad_token = "[unused0]"
    tok.save_pretrained(tmp_path)
    added = json.loads((tmp_path / "tokenizer.json").read_text())["added_tokens"]
    assert {"content": "[unused0]", "special": True}.items() <= next(
        a for a in added if a["content"] == "[unused0]").items()
    agree(Tokenizer.from_pretrained(tmp_path), HFAutoTokenizer.from_pretrained(tmp_path))
