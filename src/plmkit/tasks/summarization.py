"""Summarization: JSONL records ``{"text", "summary"}`` (``plmkit data fetch debian-summaries`` writes
them), an encoder-decoder trained to write the summary; scored with ROUGE-1/2/L (ROUGE-L picks the
best model), BLEU and chrF."""
from __future__ import annotations

from dataclasses import dataclass

from plmkit.tasks.seq2seq import Seq2SeqSettings, Seq2SeqTask
from plmkit.utils.settings import setting


@dataclass
class SummarizationSettings(Seq2SeqSettings):
    section = "summarization"
    max_length: int | None = setting(None, "tokens of the text kept (off: 512, or the model's positions if fewer)",
                                     metavar="N", at_least=2)
    max_target_length: int = setting(64, "summary tokens kept (end-of-sequence included)", metavar="N", at_least=2)
    no_repeat_ngram_size: int = setting(3, "never generate an n-gram twice (0: off)", metavar="N", at_least=0)


class SummarizationTask(Seq2SeqTask):
    name = "summarization"
    settings_class = SummarizationSettings
    pipelines = ("summarization", "text2text-generation")
    description = "JSONL with text and summary"
    source_field, target_field, output_key = "text", "summary", "summary_text"

    def main_metric(self) -> str:
        return "rougeL"


__all__ = ["SummarizationSettings", "SummarizationTask"]
