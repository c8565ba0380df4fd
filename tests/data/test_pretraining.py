"""Pretraining data: token cache, BERT sentence pairs, held-out split, dynamic masking."""
import gzip
import json
import random

import numpy as np
import pytest
import torch

from plmkit.data import shards as shards_module
from plmkit.data.pretraining import (IS_NEXT, NO_PAIR, RANDOM_NEXT, PretrainingCollator, PretrainingDataset,
                                     build_token_shards, continuation_table, group_documents, nsp_instances,
                                     packed_instances, split_documents, truncate_pair)
from plmkit.errors import DataError
from plmkit.tokenization import Tokenizer

SENTENCES = [
    "The river ran quietly past the old mill.", "Children played in the fields until dusk.",
    "A storm rolled in from the west, and the farmers hurried home.", "The baker opened his shop before sunrise.",
    "Letters arrived from the city every Tuesday.", "Nobody remembered who had planted the oak tree.",
    "The teacher read a story about a clever fox.", "Lanterns were lit along the narrow streets.",
    "Her grandmother kept bees behind the cottage.", "The train was late again, as it often was in winter.",
    "Merchants argued loudly over the price of wool.", "A small boat drifted toward the harbour.",
    "The library smelled of dust and old paper.", "He walked to the market with a basket of apples.",
    "Snow covered the hills by the end of November.", "The mayor promised to repair the bridge.",
]


def write_corpus(path, n_docs=60, seed=0, min_sent=1, max_sent=8):
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(min_sent, max_sent))) for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train_wordpiece(SENTENCES * 3, 150)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("pretraining")
    corpus = write_corpus(root / "corpus.txt", n_docs=120)
    return build_token_shards([corpus], tokenizer, root / "cache")


# ------------------------------------------------------------------------------------------ cache
def test_shards_layout_and_dtype(shards, tokenizer):
    assert shards.tokens.dtype == np.uint16 and shards.num_documents == 120
    assert shards.sentences[0] == 0 and shards.sentences[-1] == len(shards.tokens)
    assert shards.documents[-1] == shards.num_sentences
    first = tokenizer.backend_tokenizer.encode(SENTENCES[0], add_special_tokens=False).ids
    assert all(np.diff(shards.sentences) > 0)
    assert any(list(shards.sentence(i)) == first for i in range(shards.num_sentences))


def test_cache_is_reused_and_invalidated(tmp_path, tokenizer, monkeypatch, caplog):
    corpus = write_corpus(tmp_path / "c.txt", n_docs=5)
    first = build_token_shards([corpus], tokenizer, tmp_path / "cache")
    assert not first.reused

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the corpus was tokenized again")

    monkeypatch.setattr(shards_module, "_write_entry", no_tokenizing)
    with caplog.at_level("INFO", logger="plmkit"):
        again = build_token_shards([corpus], tokenizer, tmp_path / "cache")
    assert again.reused and again.directory == first.directory and "reusing" in caplog.messages[-1]
    np.testing.assert_array_equal(again.tokens, first.tokens)
    monkeypatch.undo()
    write_corpus(corpus, n_docs=6)  # a changed file gets a new entry
    changed = build_token_shards([corpus], tokenizer, tmp_path / "cache")
    assert changed.directory != first.directory and changed.num_documents == 6


@pytest.mark.parametrize("name", ["c.txt.gz", "c.jsonl"])
def test_progress_bar_counts_bytes_on_disk_as_its_total_does(tmp_path, tokenizer, progress_bars, name):
    docs = write_corpus(tmp_path / "c.txt", n_docs=200).read_text().split("\n\n")
    path = tmp_path / name
    if name.endswith(".gz"):  # decompressed text is far larger than the file
        path.write_bytes(gzip.compress("\n\n".join(docs).encode()))
    else:  # the JSON around each text is not text
        path.write_text("".join(json.dumps({"id": i, "text": d, "source": "test"}) + "\n" for i, d in enumerate(docs)))
    bars = progress_bars(shards_module)
    build_token_shards([path], tokenizer, tmp_path / "cache", progress=False)
    [bar] = bars
    assert bar.total == path.stat().st_size == sum(bar.updates)


def test_empty_corpus_is_a_clear_error(tmp_path, tokenizer):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="empty corpus"):
        build_token_shards([tmp_path / "empty.txt"], tokenizer, tmp_path / "cache")


# ------------------------------------------------------------------------------------- examples
def doc_of(shards, token_offset):
    sentence = np.searchsorted(shards.sentences, token_offset, side="right") - 1
    return int(np.searchsorted(shards.documents, sentence, side="right") - 1)


def test_nsp_balance_lengths_and_split(shards):
    train_docs, eval_docs = split_documents(shards.num_documents, 0.2, seed=3, min_eval=2)
    assert len(eval_docs) == 24 and not set(train_docs) & set(eval_docs)
    assert len(train_docs) + len(eval_docs) == shards.num_documents
    for docs, seed in ((train_docs, 0), (eval_docs, 1)):
        rows = nsp_instances(shards, docs, seq_len=32, seed=seed, dupe_factor=3)
        allowed = set(int(d) for d in docs)
        assert abs((rows[:, 4] == RANDOM_NEXT).mean() - 0.5) < 0.08
        assert ((rows[:, 1] - rows[:, 0]) + (rows[:, 3] - rows[:, 2]) <= 29).all()
        assert ((rows[:, 1] > rows[:, 0]) & (rows[:, 3] > rows[:, 2])).all()
        for a0, a1, b0, b1, label in rows:
            a_doc, b_doc = doc_of(shards, a0), doc_of(shards, b0)
            assert {a_doc, doc_of(shards, a1 - 1), b_doc, doc_of(shards, b1 - 1)} <= allowed  # never crosses splits
            assert (a_doc == b_doc) == (label == IS_NEXT)
            if label == IS_NEXT:
                assert b0 >= a1  # B comes after A


def test_short_documents_of_a_file_are_grouped(tmp_path, tokenizer):
    a = write_corpus(tmp_path / "a.txt", n_docs=20, seed=1, max_sent=2)
    b = write_corpus(tmp_path / "b.txt", n_docs=3, seed=2, max_sent=2)
    sh = build_token_shards([a, b], tokenizer, tmp_path / "cache")
    assert sh.doc_files.tolist() == [0] * 20 + [1] * 3
    groups = group_documents(sh, 40)
    assert [d for g in groups for d in g] == list(range(23))  # consecutive, all kept, in order
    assert all(len({int(sh.doc_files[d]) for d in g}) == 1 for g in groups)  # never across files
    sizes = [sh.sentences[sh.documents[g[-1] + 1]] - sh.sentences[sh.documents[g[0]]] for g in groups]
    assert all(n >= 40 for n, g in zip(sizes, groups) if g[-1] not in (19, 22))
    assert group_documents(sh, 0) == [[d] for d in range(23)]
    rows = nsp_instances(sh, groups, seq_len=64, seed=0)
    assert len(rows) and abs((rows[:, 4] == RANDOM_NEXT).mean() - 0.5) < 0.2


def test_nsp_needs_two_documents(shards):
    with pytest.raises(DataError, match="at least 2 documents"):
        nsp_instances(shards, [0], seq_len=32, seed=0)


def test_truncate_pair_trims_the_longer_side():
    rng = np.random.default_rng(0)
    a, b = truncate_pair((0, 50), (100, 110), 30, rng)
    assert (a[1] - a[0], b[1] - b[0]) == (20, 10) and 0 <= a[0] and a[1] <= 50
    a, b = truncate_pair((0, 20), (100, 121), 30, rng)
    assert (a[1] - a[0]) + (b[1] - b[0]) == 30 and abs((a[1] - a[0]) - (b[1] - b[0])) <= 1


def test_packed_mlm_examples_stay_in_one_document(shards, tokenizer):
    rows = packed_instances(shards, range(shards.num_documents), seq_len=24)
    assert (rows[:, 4] == NO_PAIR).all() and (rows[:, 1] - rows[:, 0] <= 22).all()
    assert all(doc_of(shards, a0) == doc_of(shards, a1 - 1) for a0, a1, *_ in rows)
    assert rows[:, 1].sum() - rows[:, 0].sum() == len(shards.tokens)  # every token used once
    example = PretrainingDataset(shards, rows, tokenizer.cls_token_id, tokenizer.sep_token_id)[0]
    assert example["input_ids"][0] == tokenizer.cls_token_id and example["input_ids"][-1] == tokenizer.sep_token_id


# -------------------------------------------------------------------------------------- masking
def random_examples(tokenizer, n=256, max_len=128, seed=0):
    rng = np.random.default_rng(seed)
    normal = np.array(sorted(set(range(len(tokenizer))) - set(tokenizer.all_special_ids)))
    out = []
    for _ in range(n):
        la, lb = rng.integers(5, max_len // 2 - 2, size=2)
        ids = np.concatenate([[tokenizer.cls_token_id], rng.choice(normal, la), [tokenizer.sep_token_id],
                              rng.choice(normal, lb), [tokenizer.sep_token_id]])
        out.append({"input_ids": ids, "num_a": la + 2, "next_sentence_label": int(rng.integers(2))})
    return out


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_masking_statistics(tokenizer, rate):
    examples = random_examples(tokenizer)
    batch = PretrainingCollator(tokenizer, mask_rate=rate)(examples)
    original = torch.zeros_like(batch["input_ids"])
    for row, e in enumerate(examples):
        original[row, :len(e["input_ids"])] = torch.from_numpy(e["input_ids"])
    assert batch["input_ids"].shape[1] == max(len(e["input_ids"]) for e in examples)  # padded to the longest
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    eligible = batch["attention_mask"].bool() & ~special
    labelled = batch["labels"] != -100
    assert not (labelled & ~eligible).any()  # specials and padding never masked
    assert abs(labelled.sum().item() / eligible.sum().item() - rate) < 0.01
    assert torch.equal(batch["labels"][labelled], original[labelled])
    inputs = batch["input_ids"][labelled]
    as_mask = (inputs == tokenizer.mask_token_id).float().mean().item()
    kept = (inputs == original[labelled]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - as_mask - kept - 0.1) < 0.02
    assert not torch.isin(inputs[inputs != tokenizer.mask_token_id], torch.tensor(tokenizer.all_special_ids)).any()
    assert torch.equal(batch["input_ids"][~labelled], original[~labelled])
    types = batch["token_type_ids"][0]
    n_a, n = examples[0]["num_a"], len(examples[0]["input_ids"])
    assert types[:n_a].eq(0).all() and types[n_a:n].eq(1).all() and types[n:].eq(0).all()
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in examples]


def test_masks_are_dynamic_and_follow_the_global_rng(tokenizer):
    examples = random_examples(tokenizer, n=16)
    collate = PretrainingCollator(tokenizer)
    torch.manual_seed(5)
    first, second = collate(examples), collate(examples)
    assert not torch.equal(first["labels"], second["labels"])  # fresh masks each time
    torch.manual_seed(5)
    assert torch.equal(collate(examples)["labels"], first["labels"])


def test_whole_word_masking_masks_words_together():
    tok = Tokenizer.train_wordpiece(SENTENCES * 3, 120)  # small vocab: many ## pieces
    cont = continuation_table(tok)
    assert cont.any()
    texts = [" ".join(random.Random(i).sample(SENTENCES, 4)) for i in range(64)]
    examples = [{"input_ids": np.array(tok.encode(t)), "num_a": 1, "next_sentence_label": 0} for t in texts]
    batch = PretrainingCollator(tok, whole_word_mask=True, nsp=False)(examples)
    labelled = batch["labels"] != -100
    total = eligible_total = 0
    for row, e in enumerate(examples):
        ids = e["input_ids"]
        words, current = [], []
        for pos in range(1, len(ids) - 1):
            if not cont[ids[pos]] and current:
                words.append(current)
                current = []
            current.append(pos)
        words.append(current)
        for word in words:
            states = labelled[row, word]
            assert states.all() or not states.any()  # a word is masked whole or not at all
        total += labelled[row].sum().item()
        eligible_total += len(ids) - 2
    assert abs(total / eligible_total - 0.15) < 0.02


def test_an_all_tiny_batch_still_gets_a_mask(tokenizer):
    ex = [{"input_ids": np.array([tokenizer.cls_token_id, 20, tokenizer.sep_token_id]), "num_a": 3,
           "next_sentence_label": 0}]
    for seed in range(10):
        torch.manual_seed(seed)
        assert (PretrainingCollator(tokenizer)(ex)["labels"] != -100).sum() == 1


def test_too_few_groups_of_short_documents_say_so_and_what_helps(tmp_path, tokenizer):
    """12 short paragraphs are a few groups of >= 200 tokens: the error said '2 document(s)' and to add documents,
    though the file has 12 and lowering the grouping (min_doc_tokens) is what helps."""
    from plmkit.data.nsp import split_examples
    a = write_corpus(tmp_path / "a.txt", n_docs=12, seed=1, max_sent=1)
    sh = build_token_shards([a], tokenizer, tmp_path / "cache")
    groups = len(group_documents(sh, 200))
    assert groups < 4
    with pytest.raises(DataError, match=rf"has {groups} group\(s\).*12 documents make these {groups} groups.*grouped "
                                        r"up to 200 tokens: lower min_doc_tokens \(0: every document its own\)"):
        split_examples(sh, 200, 0.1, 0, lambda groups, seed, held: np.zeros((0, 5)), need=2)
    train, held = split_examples(sh, 0, 0.1, 0, lambda groups, seed, held: np.zeros((len(groups), 5)), need=2)
    assert len(train) + len(held) == 12  # every document its own: enough
