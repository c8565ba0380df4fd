"""Tokenizer.train: every model kind and style, a joint vocabulary from both sides of a parallel
corpus, Chinese without spaces, and transformers loading what it saves."""
import json

import finetune_helpers as h
import pytest
from transformers import AutoTokenizer as HFAutoTokenizer

from plmkit.errors import ConfigError
from plmkit.tokenization import Tokenizer
from plmkit.tokenization.training import BYTE_TOKENS, MAX_PIECE

PAIRS = 500  # en/zh records of the parallel sample
SAMPLES = ["Hello world!", "我们喜欢自然语言处理。", "Mixed 中文 and English 🤗 text", "  two  spaces and tabs\t",
           "a <mask> b", "<0x41> is not a byte", "龘 (a rare character)"]
# (model, style) -> (ids of the style's tokens, in order), transformers class
KINDS = {
    ("unigram", None): ({"eos_token_id": 0, "unk_token_id": 1, "pad_token_id": 2}, "TokenizersBackend"),
    ("bpe", None): ({"eos_token_id": 0, "unk_token_id": 1, "pad_token_id": 2}, "TokenizersBackend"),
    ("byte-bpe", "bart"): ({"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "unk_token_id": 3,
                            "mask_token_id": 4, "cls_token_id": 0, "sep_token_id": 2}, "RobertaTokenizer"),
}


def texts(name: str, file: str, n: int, skip: int = 0) -> list[str]:
    lines = (h.data_dir(name) / file).read_text(encoding="utf-8").splitlines()[skip:skip + n]
    return [json.loads(line)["text"] for line in lines]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A parallel JSONL file: English movie reviews as sources, Chinese product reviews as targets."""
    path = tmp_path_factory.mktemp("corpus") / "pairs.jsonl"
    en, zh = texts("en-sentiment", "movie_reviews.train.jsonl", PAIRS), texts("zh-sentiment", "train.jsonl", PAIRS)
    path.write_text("".join(json.dumps({"source": s, "target": t}, ensure_ascii=False) + "\n" for s, t in zip(en, zh)),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(pairs):
    return {kind: Tokenizer.train(pairs, 4000, model=kind[0], style=kind[1]) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_styles_give_their_special_tokens_and_wrapping(trained, kind):
    tok, (ids, _) = trained[kind], KINDS[kind]
    assert {name: getattr(tok, name) for name in ids} == ids and len(tok) == 4000
    one, two = tok("Hello").input_ids, tok("Hello", "world").input_ids
    bare = tok("Hello", add_special_tokens=False).input_ids + tok("world", add_special_tokens=False).input_ids
    if kind[1] == "bart":  # <s> A </s> and <s> A </s></s> B </s>
        assert one[0] == 0 and one[-1] == 2 and two.count(2) == 3 and two[0] == 0
    else:  # A </s> and A B </s>
        assert one[-1] == 0 and one[0] != 0 and two == bare + [0]
    assert "token_type_ids" not in tok("x")


@pytest.mark.parametrize("kind", KINDS)
def test_saved_tokenizer_loads_identically_in_transformers_and_plmkit(trained, kind, tmp_path):
    tok = trained[kind]
    tok.save_pretrained(tmp_path)
    hf = HFAutoTokenizer.from_pretrained(tmp_path)
    assert type(hf).__name__ == KINDS[kind][1]
    kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    for text in SAMPLES:
        ours, theirs = tok(text, **kw), hf(text, **kw)
        assert ours.input_ids == theirs["input_ids"] and ours.special_tokens_mask == theirs["special_tokens_mask"]
        assert ours.offset_mapping == [tuple(o) for o in theirs["offset_mapping"]], text
        assert tok.decode(ours.input_ids, skip_special_tokens=True) == hf.decode(theirs["input_ids"],
                                                                                skip_special_tokens=True)
    assert tok(SAMPLES[:3], SAMPLES[3:6], padding=True) == dict(hf(SAMPLES[:3], SAMPLES[3:6], padding=True))
    assert tok.all_special_ids == hf.all_special_ids and tok.pad_token_id == hf.pad_token_id
    reloaded = Tokenizer.from_pretrained(tmp_path)
    assert reloaded(SAMPLES, padding=True) == tok(SAMPLES, padding=True)
    assert reloaded.special_tokens_map == tok.special_tokens_map


@pytest.mark.parametrize("kind", KINDS)
def test_chinese_and_english_held_out_tokenise_into_subwords_and_round_trip(trained, kind):
    tok = trained[kind]
    tok.model_max_length = None  # some reviews are long
    zh = texts("zh-sentiment", "test.jsonl", 200)
    en = texts("en-sentiment", "movie_reviews.test.jsonl", 200)
    for held_out in (zh, en):
        ids = tok(held_out, add_special_tokens=False).input_ids
        assert [tok.decode(i) for i in ids] == held_out  # exact: spaces kept, none inserted into Chinese
    pieces = [p for ids in tok(zh, add_special_tokens=False).input_ids for p in tok.convert_ids_to_tokens(ids)]
    assert tok.unk_token not in pieces
    assert sum(p in BYTE_TOKENS for p in pieces) / len(pieces) < 0.1  # characters training never saw, as bytes
    assert 0.6 < len(pieces) / sum(map(len, zh)) < 0.9  # sub-words: often 2+ characters, ...
    assert max(len(p.lstrip("▁")) for p in pieces if p not in BYTE_TOKENS) <= MAX_PIECE  # ... never whole sentences


def test_joint_vocabulary_reads_both_sides_and_chosen_fields(tmp_path):
    (tmp_path / "mt.jsonl").write_text('{"source": "alpha beta", "target": "伽马德尔塔"}\n' * 20, encoding="utf-8")
    (tmp_path / "sum.jsonl").write_text('{"text": "a long text", "summary": "short"}\n' * 20, encoding="utf-8")
    (tmp_path / "de_en.jsonl").write_text('{"de": "Guten Tag", "en": "Good day"}\n' * 20, encoding="utf-8")
    tok = Tokenizer.train([tmp_path / "mt.jsonl", tmp_path / "sum.jsonl"], 320, model="bpe")
    assert tok.tokenize("alpha beta 伽马德尔塔 a long text short") == [
        "▁alpha", "▁beta", "▁伽马德尔塔", "▁a", "▁long", "▁text", "▁short"]
    english = Tokenizer.train(tmp_path / "de_en.jsonl", 300, model="bpe", fields=["en"]).get_vocab()
    assert "▁Good" in english and not {"u", "T"} & set(english)  # nothing of "Guten Tag"


def test_train_wordpiece_and_train_bpe_are_the_wordpiece_and_byte_bpe_models():
    corpus = ["The quick brown fox.", "我们喜欢自然语言处理。"] * 20
    assert set(Tokenizer.train(corpus, 300).get_vocab()) == set(Tokenizer.train_wordpiece(corpus, 300).get_vocab())
    gpt2 = Tokenizer.train(corpus, 300, model="byte-bpe", special_tokens=["<|pad|>"])
    assert gpt2.convert_ids_to_tokens([0, 1]) == ["<|endoftext|>", "<|pad|>"]  # the style's required token first
    assert gpt2.additional_special_tokens == ["<|pad|>"] and gpt2.tokenizer_class == "GPT2Tokenizer"
    assert set(gpt2.get_vocab()) == set(Tokenizer.train_bpe(corpus, 300, special_tokens=["<|pad|>"]).get_vocab())


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="sentencepiece"), r"model='sentencepiece' is not a tokenizer model; use one of wordpiece, byte-bpe"),
    (dict(model="unigram", style="t5"), r"style='t5' is not a tokenizer style; use one of bert, gpt2, bart, marian"),
    (dict(model="wordpiece", style="marian"), r"model='wordpiece' and style='bert' go together only"),
    (dict(model="unigram", style="bert"), r"model='wordpiece' and style='bert' go together only"),
    (dict(model="bpe", vocab_size=259), r"vocab_size=259 must be an int larger than 259, the 3 special tokens plus "
                                        r"256 byte tokens"),
    (dict(model="unigram", vocab_size=280), r"vocab_size=280 is too small for this corpus: a unigram vocabulary "
                                            r"holds each of its 32 distinct characters, 3 special tokens and 256 byte "
                                            r"tokens; use a vocab_size of at least 292, or model='bpe'"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    corpus = ["abcdefghijklmnopqrstuvwxyz ABCDE"] * 5  # 32 distinct characters
    kwargs = {"vocab_size": 300, **kwargs}
    with pytest.raises(ConfigError, match=message):
        Tokenizer.train(corpus, kwargs.pop("vocab_size"), **kwargs)
    if kwargs["model"] == "unigram" and "style" not in kwargs:
        assert len(Tokenizer.train(corpus, 292, model="unigram")) <= 292  # the least it asks for is enough


def _words_corpus(path, lines: int = 400):
    """Made-up words over 26 letters and digits: many equally frequent pairs, whose order the trainer must break."""
    import random
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 9))) for _ in range(600)]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) + " 我们喜欢自然语言处理。"
                              for _ in range(lines)), encoding="utf-8")
    return path


def test_wordpiece_training_gives_the_same_tokenizer_in_every_process(tmp_path):
    import subprocess
    import sys
    corpus = _words_corpus(tmp_path / "corpus.txt")
    train = ("import sys; from plmkit.tokenization.training import train_vocabulary as t; "
             "t(sys.argv[1], 900, model='wordpiece', style=None, fields='auto', special_tokens=None, lowercase=None, "
             "min_frequency=None, show_progress=False).backend.save(sys.argv[2])")  # no transformers: quick to start
    runs = [subprocess.Popen([sys.executable, "-c", train, str(corpus), str(tmp_path / f"{i}.json")]) for i in range(2)]
    assert [run.wait(timeout=60) for run in runs] == [0, 0]
    assert (tmp_path / "0.json").read_bytes() == (tmp_path / "1.json").read_bytes()


def test_wordpiece_numbering_keeps_tokenization_and_special_ids(tmp_path):
    from plmkit.tokenization import training
    corpus = _words_corpus(tmp_path / "corpus.txt", 100)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    continuing = training._continuing_pieces(training.training_texts(corpus), "[UNK]", True)
    assert continuing == sorted("##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789")
    raw = training._untrained("wordpiece", "[UNK]", True)
    training._train(raw, training._trainer("wordpiece", 600, specials + continuing, "[UNK]", 2, False),
                    training.training_texts(corpus))
    canonical = training._canonical_wordpiece(raw, specials, continuing)
    texts = SAMPLES + corpus.read_text(encoding="utf-8").splitlines()[:20]
    assert [e.tokens for e in canonical.encode_batch(texts)] == [e.tokens for e in raw.encode_batch(texts)]
    vocab = canonical.get_vocab()
    assert set(vocab) == set(raw.get_vocab()) and sorted(vocab.values()) == list(range(len(vocab)))
    assert [vocab[t] for t in specials] == list(canonical.get_added_tokens_decoder()) == [0, 1, 2, 3, 4]
    order = sorted(vocab, key=vocab.get)
    single = [t for t in order[5:] if len(t) == 1]
    assert order[5:5 + len(single) + len(continuing)] == sorted(single) + continuing  # characters, then "##" ones
    assert raw.encode("x ##a").tokens == ["x", "##a"] and "##a" not in canonical.encode("x ##a").tokens  # not special

    tok = Tokenizer.train((line for line in texts), 600)  # a one-shot iterator, read twice
    assert tok("Hello world").input_ids[0] == tok.cls_token_id == 2
    assert tok.get_vocab() == Tokenizer.train(texts, 600).get_vocab()
