"""Translation: JSONL records ``{"source", "target"}`` (``plmkit data fetch fr-en`` writes them), an
encoder-decoder trained to write the target; scored with sacreBLEU's BLEU (the best model) and chrF,
with the ``zh`` tokenizer for Chinese targets (said by ``--target-lang``, or seen in the data).
``--reverse`` trains the other direction on the same files (English -> Chinese on ``zh-en``): every record
the model reads then gives its input as ``target`` and its output as ``source``."""
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
    reverse: bool = setting(False, "translate the other way: a record's target is the input, its source the output "
                                   "(e.g. en->zh on zh-en); saved with the model, so its files are read alike")


class TranslationTask(Seq2SeqTask):
    name = "translation"
    settings_class = TranslationSettings
    pipelines = ("translation", "text2text-generation")
    description = "JSONL with source and target"
    output_key = "translation_text"

    @property
    def source_field(self) -> str:
        return "target" if self.settings.reverse else "source"

    @property
    def target_field(self) -> str:
        return "source" if self.settings.reverse else "target"

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
