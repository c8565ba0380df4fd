"""Translation and summarization metrics: equal to sacreBLEU and rouge-score called directly, Chinese
targets scored with sacreBLEU's zh tokenizer, CJK characters kept by the ROUGE tokenizer, lead-1."""
from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from plmkit.evaluation.seq2seq import (RougeTokenizer, SummarizationMetrics, TranslationMetrics, lead,
                                       lead_baseline)
from shard_helpers import reduced_on_first

HYPOTHESES = ["The cat sat on the mat.", "A fast brown fox leaps over the lazy dog!", "It is raining today.",
              "Install the development files of the library."]
REFERENCES = ["The cat is sitting on the mat.", "The quick brown fox jumps over the lazy dog.",
              "Today it rains.", "This package contains the development files of the library."]


def test_bleu_and_chrf_equal_sacrebleu_and_carry_its_signature():
    metrics = TranslationMetrics()
    metrics.update(HYPOTHESES[:1], REFERENCES[:1])  # streamed: two batches
    metrics.update(HYPOTHESES[1:], REFERENCES[1:])
    result = metrics.compute()
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score, abs=1e-9)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score, abs=1e-9)
    assert 5 < result["bleu"] < 60 and result["n"] == 4
    assert metrics.signatures()["bleu"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert metrics.signatures()["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    bleu_line, chrf_line = metrics.format().splitlines()
    assert bleu_line.startswith(f"BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__} = "
                                f"{result['bleu']:.2f} ")
    assert chrf_line.startswith("chrF2|nrefs:1|") and chrf_line.endswith(f" = {result['chrf']:.2f}")


def test_chinese_targets_are_scored_with_the_zh_tokenizer():
    hypotheses, references = ["猫坐在垫子上。", "今天下雨了。"], ["猫坐在垫子上了。", "今天在下雨。"]
    metrics = TranslationMetrics(target_lang="zh_CN")
    metrics.update(hypotheses, references)
    expected = sacrebleu.BLEU(tokenize="zh").corpus_score(hypotheses, [references]).score
    assert metrics.compute()["bleu"] == pytest.approx(expected, abs=1e-9) and expected > 20
    assert "tok:zh" in metrics.signatures()["bleu"]
    # 13a sees one "word" per Chinese sentence: no n-gram matches
    assert sacrebleu.BLEU(tokenize="13a").corpus_score(hypotheses, [references]).score < 1


@pytest.mark.parametrize("lang", ["ja", "ko"])
def test_japanese_and_korean_targets_are_not_scored_as_one_token_a_sentence(lang, caplog):
    """13a splits on spaces, which Japanese does not write: a sentence was one token, a BLEU near 0 for a
    prediction one character off. sacreBLEU's MeCab tokenizer where its packages run, else characters."""
    from sacrebleu.metrics import BLEU
    from plmkit.evaluation.seq2seq import MECAB
    try:
        BLEU(tokenize=MECAB[lang][0])
        expected = MECAB[lang][0]
    except RuntimeError:
        expected = "char"
    metrics = TranslationMetrics(target_lang=f"{lang}-JP" if lang == "ja" else lang)
    assert metrics.tokenize == expected
    assert expected == MECAB[lang][0] or "needs `pip install" in caplog.text
    metrics.update(["今日は良い天気です"], ["今日はいい天気です"])
    assert metrics.compute()["bleu"] > 30  # (13a: 0.0)
    assert f"tok:{expected}" in metrics.signatures()["bleu"]


@pytest.mark.parametrize("target_lang", [None, "zh"])
def test_bleu_and_chrf_of_processes_summing_their_statistics_equal_the_corpus_score_exactly(target_lang):
    """Three processes score parts of a corpus (one of them none: fewer rows than processes) and add up
    their n-gram statistics: sacreBLEU's corpus BLEU and chrF of the whole corpus, to the last bit."""
    hypotheses, references = (HYPOTHESES, REFERENCES) if target_lang is None else (
        ["猫坐在垫子上。", "今天下雨了。", "图书馆九点开门。"],
        ["猫坐在垫子上了。", "今天在下雨。", "图书馆早上九点开门。"])
    parts = [TranslationMetrics(target_lang) for _ in range(3)]
    parts[0].update(hypotheses[:1], references[:1])
    parts[2].update(hypotheses[1:], references[1:])
    whole = reduced_on_first(parts)
    tokenize = "zh" if target_lang else "13a"
    bleu = sacrebleu.BLEU(tokenize=tokenize).corpus_score(hypotheses, [references])
    chrf = sacrebleu.CHRF().corpus_score(hypotheses, [references])
    assert whole.compute() == {"bleu": bleu.score, "chrf": chrf.score, "n": len(hypotheses)}
    assert 5 < bleu.score < 95
    assert whole.format().splitlines()[0].split(" = ", 1)[1] == str(bleu).split(" = ", 1)[1]  # (counts, lengths)


def test_rouge_of_processes_summing_their_scores_equals_one_process():
    parts = [SummarizationMetrics() for _ in range(2)]
    parts[0].update(HYPOTHESES[:3], REFERENCES[:3])
    parts[1].update(HYPOTHESES[3:], REFERENCES[3:])
    one = SummarizationMetrics()
    one.update(HYPOTHESES, REFERENCES)
    assert reduced_on_first(parts).compute() == pytest.approx(one.compute(), abs=1e-9)


def test_metrics_refuse_unequal_batches_and_report_zero_when_empty():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        TranslationMetrics().update(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        SummarizationMetrics().update(["a"], ["a", "b"])
    assert TranslationMetrics().compute() == {"bleu": 0.0, "chrf": 0.0, "n": 0}
    assert SummarizationMetrics().compute() == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "n": 0}


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_rouge_equals_rouge_score_on_english(use_stemmer):
    metrics = SummarizationMetrics(use_stemmer=use_stemmer)
    metrics.update(HYPOTHESES[:2], REFERENCES[:2])
    metrics.update(HYPOTHESES[2:], REFERENCES[2:])
    result = metrics.compute()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)  # its own tokenizer
    scores = [scorer.score(r, h) for h, r in zip(HYPOTHESES, REFERENCES)]
    for name in ("rouge1", "rouge2", "rougeL"):
        assert result[name] == pytest.approx(100 * sum(s[name].fmeasure for s in scores) / 4, abs=1e-9)
    assert result["n"] == 4 and 0 < result["rouge2"] < result["rouge1"] < 100


def test_rouge_keeps_cjk_characters():
    reference, prediction = "猫坐在垫子上", "猫在垫子上"
    default = rouge_scorer.RougeScorer(["rouge1"]).score(reference, prediction)["rouge1"].fmeasure
    assert default == 0.0  # rouge-score's own tokenizer drops every character
    metrics = SummarizationMetrics()
    metrics.update([prediction], [reference])
    # unigrams: 5 of 5 predicted, 5 of 6 reference: F = 10/11; bigrams: 3 of 4 and 3 of 5: F = 2/3;
    # longest common subsequence 猫在垫子上, 5 characters: F = 10/11
    assert metrics.compute() == pytest.approx({"rouge1": 1000 / 11, "rouge2": 200 / 3, "rougeL": 1000 / 11, "n": 1})
    assert RougeTokenizer(use_stemmer=True).tokenize("GNU hello 程序 réécrit les files_x, ひらがな") == [
        "gnu", "hello", "程", "序", "réécrit", "les", "file", "x", "ひ", "ら", "が", "な"]


def test_lead_1_baseline_on_a_tiny_sample():
    records = [{"text": "The cat sat on the mat. It purred all day long.\nThen it slept.",
                "summary": "A cat sat on the mat"},
               {"text": "Mr. Smith built a house by the river. It took ten years.", "summary": "Smith's river house"}]
    assert lead(records[0]["text"]) == "The cat sat on the mat."
    assert lead(records[1]["text"]) == "Mr. Smith built a house by the river."
    assert lead(records[0]["text"], n=3) == "The cat sat on the mat. It purred all day long. Then it slept."
    result = lead_baseline(records)
    # 1: "the cat sat on the mat" against "a cat sat on the mat": 5 of 6 unigrams each way, F = 5/6;
    # 2: "mr smith built a hous by the river" (8) against "smith s river hous" (4): smith, hous, river: F = 2*3/12
    assert result["rouge1"] == pytest.approx(100 * (5 / 6 + 0.5) / 2)
    assert result["n"] == 2
