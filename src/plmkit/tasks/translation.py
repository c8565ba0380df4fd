"""Translation: JSONL records ``{"source", "target"}`` (``plmkit data fetch fr-en`` writes them), an
encoder-decoder trained to write the target; scored with sacreBLEU's BLEU (the best model) and chrF,
with the ``zh`` tokenizer for Chinese targets (said by ``--target-lang``, or seen in the data)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from plmkit.tasks.seq2seq import Seq2SeqSettings, Seq2SeqTask
from plmkit.utils.settings import setting

_CHINESE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


@dataclass
class TranslationSettings(Seq2SeqSettings):
    section = "translation"
    target_lang: str | None = setting(None, "the target language (zh: BLEU on sacreBLEU's zh tokens); off: zh when "
                                            "the training targets are mostly Chinese", metavar="LANG")


class TranslationTask(Seq2SeqTask):
    name = "translation"
    settings_class = TranslationSettings
    pipelines = ("translation", "text2text-generation")
    description = "JSONL with source and target"
    source_field, target_field, output_key = "source", "target", "translation_text"

    def discover(self, examples, path) -> None:
        if self.settings.target_lang is None:
            text = "".join(e.target for e in examples[:1000])
            self.settings.target_lang = "zh" if len(_CHINESE.findall(text)) > len(text) / 4 else None
        return None

    def main_metric(self) -> str:
        return "bleu"

    def target_language(self) -> str | None:
        return self.settings.target_lang


__all__ = ["TranslationSettings", "TranslationTask"]
