"""BART's denoising noise: span lengths follow Poisson(3) (a chi-square test that Poisson(4) fails), 30%
of the tokens masked, one mask token per span, zero-length spans as insertions, sentence permutation
keeping the sentences, labels the original; seeded and resumable."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from plmkit.data.denoising import (DenoisingCollator, fit_spans_in_gaps, permute_sentences, span_lengths,
                                   text_infilling)
from plmkit.tokenization import Tokenizer

MASK = -1  # the documents below hold ids 0..n-1, so a mask is told apart and every span is recovered


def spans_of(noised: torch.Tensor, n: int) -> list[int]:
    """The span behind each mask of a noised document of ids 0..n-1: the ids missing between the kept
    ids around it. Checks that the kept ids are the document's, in order, and that no masks touch."""
    tokens = noised.tolist()
    assert all(a != MASK or b != MASK for a, b in zip(tokens, tokens[1:])), "two masks side by side"
    kept = [t for t in tokens if t != MASK]
    assert kept == sorted(kept) and len(set(kept)) == len(kept) and all(0 <= t < n for t in kept)
    spans, previous = [], -1
    for position, token in enumerate(tokens):
        if token == MASK:
            following = next((t for t in tokens[position + 1:] if t != MASK), n)
            spans.append(following - previous - 1)
        else:
            previous = token
    masked = n - len(kept)
    assert sum(spans) == masked, "a token was dropped outside a span"
    return spans


def poisson_chi_square(lengths: list[int], lam: float, bins: int = 10) -> float:
    """Pearson's chi-square of a sample against Poisson(lam): bins 0..bins-1 and one for >= bins."""
    observed = [sum(x == k for x in lengths) for k in range(bins)]
    observed.append(len(lengths) - sum(observed))
    pmf = [math.exp(-lam) * lam ** k / math.factorial(k) for k in range(bins)]
    expected = [len(lengths) * p for p in pmf] + [len(lengths) * (1 - sum(pmf))]
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected))


CHI2_10_DOF_P001 = 29.59  # Pearson's chi-square with 10 degrees of freedom exceeds this with probability 0.001


def noised_documents(lam: float, n_docs: int = 150, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(300, 1000, (n_docs,), generator=g).tolist()
    return [(n, text_infilling(torch.arange(n), MASK, 0.3, lam, g)) for n in lengths]


def test_infilling_spans_follow_poisson_3_with_one_mask_each():
    docs = noised_documents(3.0)
    spans = [s for n, noised in docs for s in spans_of(noised, n)]
    assert len(spans) > 9000
    assert poisson_chi_square(spans, 3.0) < CHI2_10_DOF_P001
    assert abs(sum(spans) / len(spans) - 3.0) < 0.1
    # zero-length spans are insertions: a mask between two neighbours, e^-3 = 5% of the spans
    assert abs(spans.count(0) / len(spans) - math.exp(-3)) < 0.01
    # about 30% of the tokens are masked
    total = sum(n for n, _ in docs)
    assert abs(sum(spans) / total - 0.3) < 0.002
    # the test can fail: Poisson(4) spans are told apart from Poisson(3)
    wrong = [s for n, noised in noised_documents(4.0) for s in spans_of(noised, n)]
    assert poisson_chi_square(wrong, 3.0) > 10 * CHI2_10_DOF_P001


def test_the_span_cut_to_fit_can_be_anywhere():
    g = torch.Generator().manual_seed(8)
    spans = [spans_of(text_infilling(torch.arange(60), MASK, 0.3, 3.0, g), 60) for _ in range(2000)]
    every, last = [s for ss in spans for s in ss], [ss[-1] for ss in spans]
    # the spans of a document are exchangeable: its last is as long as any (not the cut one, shorter)
    assert abs(sum(last) / len(last) - sum(every) / len(every)) < 0.15


def test_span_lengths_are_poisson_draws_until_k_the_last_one_cut():
    g = torch.Generator().manual_seed(1)
    draws = []
    for k in range(1, 400):
        lengths = span_lengths(k, 3.0, g)
        assert int(lengths.sum()) == k and int(lengths[-1]) >= 1
        draws += lengths[:-1].tolist()  # all but the cut one are plain Poisson(3) draws
    assert poisson_chi_square(draws, 3.0) < CHI2_10_DOF_P001
    assert span_lengths(0, 3.0, g).numel() == 0


def test_masked_fraction_is_rate_in_expectation_even_for_short_documents():
    g = torch.Generator().manual_seed(2)
    masked = sum(7 - sum(t != MASK for t in text_infilling(torch.arange(7), MASK, 0.3, 3.0, g).tolist())
                 for _ in range(4000))
    assert abs(masked / (7 * 4000) - 0.3) < 0.01  # k = 2 or 3 (2.1 on average), never rounded to one
    assert text_infilling(torch.arange(0), MASK, 0.3, 3.0, g).numel() == 0
    for n in range(1, 6):  # tiny documents: spans that do not fit a gap are merged, nothing breaks
        spans_of(text_infilling(torch.arange(n), MASK, 0.9, 3.0, g), n)


@pytest.mark.parametrize("rate, lam", [(0.3, 3.0), (0.3, 0.2), (0.6, 1.0), (0.8, 3.0), (1.0, 3.0)])
def test_masked_fraction_is_rate_even_with_more_spans_than_gaps(rate, lam):
    """High rates and small lambdas draw more spans than there are gaps between the kept tokens: the
    spans that find no gap still mask their tokens (merged into others), so k tokens are masked in every
    row and the masked fraction is `rate`; masks still never touch."""
    g = torch.Generator().manual_seed(3)
    masked = total = 0
    for n in torch.randint(5, 120, (400,), generator=g).tolist():
        row = sum(spans_of(text_infilling(torch.arange(n), MASK, rate, lam, g), n))
        assert row in (math.floor(n * rate), min(n, math.floor(n * rate) + 1))  # k = floor(n rate + u)
        masked, total = masked + row, total + n
    assert abs(masked / total - rate) < 0.01


def test_spans_beyond_the_gaps_are_merged_and_insertions_fill_the_gaps_left():
    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([2, 0, 1, 0, 3, 0, 1])
    assert fit_spans_in_gaps(lengths, 7, g) is lengths  # every span fits: unchanged
    fitted = fit_spans_in_gaps(lengths, 3, g)  # 4 positive spans, 3 gaps: one merged, no insertion left
    assert fitted.numel() == 3 and int(fitted.sum()) == 7 and bool((fitted > 0).all())
    fitted = fit_spans_in_gaps(lengths, 5, g)  # the 4 positive spans and one insertion
    assert sorted(fitted.tolist()) == [0, 1, 1, 2, 3]


def test_sentence_permutation_keeps_the_sentences():
    sentences = [[0, 1, 2], [3], [4, 5], [6, 7, 8, 9]]
    ids = torch.tensor(list(itertools.chain(*sentences)))
    g = torch.Generator().manual_seed(3)
    orders = set()
    for _ in range(400):
        out = permute_sentences(ids, [len(s) for s in sentences], g).tolist()
        pieces, i = [], 0
        while i < len(out):  # cut the output at sentence starts: each sentence is whole and in order
            sentence = next(s for s in sentences if s[0] == out[i])
            assert out[i:i + len(sentence)] == sentence
            pieces.append(sentence)
            i += len(sentence)
        assert sorted(pieces) == sorted(sentences)
        orders.add(tuple(p[0] for p in pieces))
    assert len(orders) == 24  # every order of the 4 sentences comes up
    with pytest.raises(ValueError, match=r"must be >= 0 and add up to the document's 10 tokens"):
        permute_sentences(ids, [3, 3])


@pytest.fixture(scope="module")
def bart_tokenizer():
    text = ["The quick brown fox jumps over the lazy dog.", "A stitch in time saves nine."] * 20
    return Tokenizer.train(text, 300, model="byte-bpe", style="bart")


def test_collator_batches_noised_inputs_and_original_labels(bart_tokenizer):
    tok = bart_tokenizer
    docs = [{"input_ids": list(range(10, 60)), "sentence_lengths": [20, 30]},
            {"input_ids": list(range(100, 120))}]
    batch = DenoisingCollator(tok, generator=torch.Generator().manual_seed(4))(docs)
    bos, eos, pad, mask = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.mask_token_id
    assert batch["labels"][0].tolist() == [bos, *range(10, 60), eos]
    assert batch["labels"][1].tolist() == [bos, *range(100, 120), eos] + [-100] * 30
    for row, doc in enumerate(docs):
        n = int(batch["attention_mask"][row].sum())
        ids = batch["input_ids"][row].tolist()
        assert ids[0] == bos and ids[n - 1] == eos and ids[n:] == [pad] * (len(ids) - n)
        assert mask in ids[1:n - 1] and n - 2 < len(doc["input_ids"])
    # without masking, the input is the document with its two sentences in some order
    unmasked = DenoisingCollator(tok, mask_rate=0.0, generator=torch.Generator().manual_seed(5))
    seen = {tuple(unmasked(docs[:1])["input_ids"][0, 1:-1].tolist()) for _ in range(20)}
    assert seen == {tuple(range(10, 60)), (*range(30, 60), *range(10, 30))}
    with pytest.raises(ValueError, match="poisson_lambda must be > 0"):
        DenoisingCollator(tok, poisson_lambda=0)


def test_noise_is_seeded_and_follows_the_global_rng(bart_tokenizer):
    docs = [{"input_ids": list(range(10, 200)), "sentence_lengths": [50, 60, 80]}] * 4
    collate = DenoisingCollator(bart_tokenizer)
    torch.manual_seed(6)
    first, second = collate(docs), collate(docs)
    assert not torch.equal(first["input_ids"], second["input_ids"])  # fresh noise each time
    torch.manual_seed(6)
    collate(docs)
    state = torch.get_rng_state()  # a run resumed here draws the same next batch
    assert torch.equal(collate(docs)["input_ids"], second["input_ids"])
    torch.set_rng_state(state)
    assert torch.equal(collate(docs)["input_ids"], second["input_ids"])
    seeded = [DenoisingCollator(bart_tokenizer, generator=torch.Generator().manual_seed(7))(docs) for _ in range(2)]
    assert torch.equal(seeded[0]["input_ids"], seeded[1]["input_ids"])


def test_a_noised_input_past_max_length_is_cut_keeping_its_eos(bart_tokenizer):
    tok = bart_tokenizer
    docs = [{"input_ids": list(range(10, 40))}, {"input_ids": list(range(10, 14))}]
    batch = DenoisingCollator(tok, mask_rate=0.0, permute_sentences=False, max_length=12)(docs)
    assert batch["input_ids"][0].tolist() == [tok.bos_token_id, *range(10, 20), tok.eos_token_id]
    assert batch["input_ids"][1].tolist()[:6] == [tok.bos_token_id, 10, 11, 12, 13, tok.eos_token_id]
    assert batch["labels"].shape == (2, 32)  # the labels are the whole document


PARAGRAPHS = ["The river ran past the mill. Children played\nin the fields.\nA storm came.",
              "Letters arrived on Tuesday.", "Nobody knew who planted the oak. It was old!",
              "Lanterns were lit. The streets were narrow.\n  Snow fell."]


@pytest.fixture(scope="module")
def whole_shards(tmp_path_factory, bart_tokenizer):
    from plmkit.data.shards import build_token_shards
    root = tmp_path_factory.mktemp("whole")
    (root / "c.txt").write_text("\n\n".join(PARAGRAPHS) + "\n")
    return build_token_shards([root / "c.txt"], bart_tokenizer, root / "cache", whole_documents=True)


def test_whole_documents_keep_their_whitespace_and_are_cut_at_sentences(whole_shards, bart_tokenizer):
    from plmkit.data.corpus import split_sentences
    shards, tok = whole_shards, bart_tokenizer
    assert shards.num_documents == len(PARAGRAPHS)
    for d, text in enumerate(PARAGRAPHS):
        sentences = [tok.decode(shards.sentence(s).tolist()) for s in shards.document_sentences(d)]
        assert "".join(sentences) == text  # every space and line break is a token
        assert [" ".join(s.split()) for s in sentences] == split_sentences(text)
    assert [tok.decode(shards.sentence(s).tolist()).strip(" ") for s in shards.document_sentences(0)] == \
        ["The river ran past the mill.", "Children played\nin the fields.\n", "A storm came."]


def test_dataset_documents_carry_their_sentences_and_paragraph_breaks(whole_shards, bart_tokenizer):
    from plmkit.data.denoising import DenoisingDataset
    from plmkit.data.nsp import group_documents, packed_instances
    shards, tok = whole_shards, bart_tokenizer
    separator = tok.encode("\n\n", add_special_tokens=False)
    groups = group_documents(shards, 1000)  # one file: one group
    assert groups == [[0, 1, 2, 3]]
    rows = packed_instances(shards, groups, 1000, doc_gap=len(separator))
    dataset = DenoisingDataset(shards, rows, separator)
    [example] = [dataset[i] for i in range(len(dataset))]
    assert tok.decode(example["input_ids"].tolist()) == "\n\n".join(PARAGRAPHS)
    assert sum(example["sentence_lengths"]) == len(example["input_ids"]) and len(example["sentence_lengths"]) == 9
    # shorter examples: whole sentences, the paragraph breaks counted in the length, every token once
    sizes = [int(shards.sentences[shards.documents[d + 1]] - shards.sentences[shards.documents[d]]) for d in range(4)]
    pair = sizes[1] + sizes[2]  # paragraphs 1 and 2 fill an example of this many tokens only without a break
    for room, together in ((pair, False), (pair + len(separator), True)):
        rows = packed_instances(shards, groups, room + 2, doc_gap=len(separator))
        examples = [DenoisingDataset(shards, rows, separator)[i] for i in range(len(rows))]
        assert len(examples) > 2 and max(len(e["input_ids"]) for e in examples) <= room
        joined = PARAGRAPHS[1] + "\n\n" + PARAGRAPHS[2]
        assert any(joined in tok.decode(e["input_ids"].tolist()) for e in examples) == together
    for e in examples:
        sentences = [tok.decode(e["input_ids"][end - n:end].tolist()) for n, end in
                     zip(e["sentence_lengths"], itertools.accumulate(e["sentence_lengths"]))]
        assert all(s.strip()[-1] in ".!" for s in sentences)  # cut where sentences end
    text = "".join(tok.decode(e["input_ids"].tolist()) for e in examples)
    assert text.replace("\n\n", "") == "".join(PARAGRAPHS)  # every token once, the breaks inside examples only
