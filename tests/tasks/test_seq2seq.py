"""The text-to-text tasks (translation, summarization): reading, encoding, the loss's labels, and an end
to end run of each from the command line (a Marian preset from scratch, BERT-to-BERT from a BERT)."""
import json
import logging

import pytest

import finetune_helpers as h
import plmkit
from plmkit.cli import main
from plmkit.errors import ConfigError, DataError
from plmkit.tasks.summarization import SummarizationTask
from plmkit.tasks.translation import TranslationTask

PAIRS = [("bibliothèque partagée pour le traitement d'images", "shared library for image processing"),
         ("fichiers de développement pour la bibliothèque", "development files for the library"),
         ("outil en ligne de commande pour gérer les paquets", "command line tool to manage packages"),
         ("documentation de la bibliothèque", "documentation for the library"),
         ("serveur web léger et rapide", "light and fast web server"),
         ("jeu de puzzle pour les enfants", "puzzle game for children")]


write_jsonl = h.write_jsonl


@pytest.fixture(scope="module")
def fr_en(tmp_path_factory):
    """Parallel files and a Marian-style tokenizer trained on both sides."""
    root = tmp_path_factory.mktemp("fr-en")
    train = write_jsonl(root / "train.jsonl", [{"source": s, "target": t} for s, t in PAIRS] * 4)
    dev = write_jsonl(root / "dev.jsonl", [{"source": s, "target": t} for s, t in PAIRS])
    assert main(["tokenizer", "train", "--corpus", str(train), "--model", "unigram", "--style", "marian",
                 "--vocab-size", "400", "--out", str(root / "tok")]) == 0
    return root


def test_records_are_checked_where_they_enter(tmp_path):
    task = TranslationTask()
    for line, message in [('{"source": "a"}', r"bad.jsonl:1: no 'target' field"),
                          ('{"source": "a", "target": ""}', r"bad.jsonl:1: 'target' is empty"),
                          ('{"text": "a", "target": "b"}', r"bad.jsonl:1: no 'source' field"),
                          ('{"source": 3, "target": "b"}', r"bad.jsonl:1: 'source' must be a string")]:
        (tmp_path / "bad.jsonl").write_text(line + "\n")
        with pytest.raises(DataError, match=message):
            task.read(tmp_path / "bad.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"source": "caf\xe9", "target": "x"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl:1: not UTF-8"):
        task.read(tmp_path / "latin.jsonl")
    assert SummarizationTask().read(write_jsonl(tmp_path / "s.jsonl", [{"text": "a b. c d.", "summary": "a"}]))[0].target == "a"


def test_reverse_reads_every_record_the_other_way(tmp_path):
    rows = write_jsonl(tmp_path / "zh-en.jsonl", [{"source": "图像处理库", "target": "image processing library"}])
    task = TranslationTask.of(reverse=True)
    example = task.read(rows)[0]
    assert (example.source, example.target) == ("image processing library", "图像处理库")
    task.discover([example], rows)
    assert task.settings.target_lang == "zh"  # the Chinese side is now the target
    assert task.read(write_jsonl(tmp_path / "in.jsonl", [{"target": "a web server"}]), labelled=False)[0].source \
        == "a web server"
    with pytest.raises(DataError, match=r"x.jsonl:1: no 'target' field"):
        task.read(write_jsonl(tmp_path / "x.jsonl", [{"source": "only the other side"}]), labelled=False)


def test_labels_leave_out_the_decoder_start_and_cut_targets_are_counted(fr_en, caplog):
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.from_pretrained(fr_en / "tok")
    task = TranslationTask.of(max_length=6, max_target_length=4, decoder_start_token_id=tok.pad_token_id)
    examples = task.read(fr_en / "dev.jsonl")
    with caplog.at_level(logging.INFO, logger="plmkit"):
        features = task.encode(tok, examples, None, path="dev.jsonl")
    assert "sources of 6 cut to 6 tokens" in caplog.text and "targets of 6 cut to 4 tokens" in caplog.text
    assert all(len(f["input_ids"]) <= 6 and len(f["labels"]) <= 4 for f in features)
    assert all(f["labels"][-1] == tok.eos_token_id for f in features)  # the end is kept when a target is cut
    batch = task.collate(tok)(features[:2])
    lengths = [len(f["labels"]) for f in features[:2]]
    assert [int((row != -100).sum()) for row in batch["labels"]] == lengths  # padding is -100: no loss there
    assert batch["attention_mask"].sum(1).tolist() == [len(f["input_ids"]) for f in features[:2]]
    bert = TranslationTask.of(decoder_start_token_id=101)
    cls_first = type("Tok", (), {"__call__": lambda self, s, text_target=None, **k: type(
        "B", (), {"__getitem__": lambda b, key: [[101, 7, 8, 102]] if key == "labels" else [[101, 5, 102]],
                  "truncated": {}})()})()
    assert bert.encode(cls_first, [examples[0]], None)[0]["labels"] == [7, 8, 102]  # [CLS] is the decoder's start


def test_teacher_targets_are_the_teachers_translations_of_the_sources(fr_en, tmp_path):
    """Sequence-level distillation (plmkit distill): a record's target becomes what the teacher writes."""
    import torch
    from plmkit.models.registry import config_from_preset, family_of_preset
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.from_pretrained(fr_en / "tok")
    torch.manual_seed(0)
    cls = family_of_preset("marian-tiny").model_class("seq2seq-lm")
    teacher = cls(config_from_preset("marian-tiny", **cls.config_class.tokenizer_fields(tok))).eval()
    task = TranslationTask.of(num_beams=1, max_target_length=6)
    task.check_model(teacher, "teacher")
    sources = write_jsonl(tmp_path / "sources.jsonl", [{"source": s} for s, _ in PAIRS[:3]])  # no targets
    examples = task.teacher_targets(teacher, tok, task.read(sources, labelled=False), batch_size=2)
    assert [e.source for e in examples] == [s for s, _ in PAIRS[:3]] and [e.line for e in examples] == [1, 2, 3]
    features = task.encode(tok, task.read(sources, labelled=False), None)
    assert [e.target for e in examples] == task.generate(teacher, tok, features, 3)


@pytest.mark.parametrize("beams", [4, 1])
def test_targets_are_decoded_by_the_task_s_beams_never_sampled_whatever_the_generation_config(fr_en, tmp_path, beams):
    """A model whose generation_config.json says do_sample: its targets (a teacher's, evaluation's) are still beam
    search's (4 beams with do_sample was refused) or greedy decoding's (one beam: sampled, unseeded)."""
    import torch
    from plmkit.models.registry import config_from_preset, family_of_preset
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.from_pretrained(fr_en / "tok")
    torch.manual_seed(0)
    cls = family_of_preset("marian-tiny").model_class("seq2seq-lm")
    teacher = cls(config_from_preset("marian-tiny", **cls.config_class.tokenizer_fields(tok))).eval()
    task = TranslationTask.of(num_beams=beams, max_target_length=6)
    task.progress = False
    sources = write_jsonl(tmp_path / "sources.jsonl", [{"source": s} for s, _ in PAIRS[:3]])
    plain = [e.target for e in task.teacher_targets(teacher, tok, task.read(sources, labelled=False), batch_size=2)]
    teacher.generation_config = {"do_sample": True, "top_k": 5}
    for _ in range(2):
        with pytest.warns(UserWarning, match="top_k=5 only apply when sampling"):
            written = task.teacher_targets(teacher, tok, task.read(sources, labelled=False), batch_size=2)
        assert [e.target for e in written] == plain
    teacher.generation_config = {"return_dict_in_generate": True, "output_scores": True}  # (ids all the same)
    written = task.teacher_targets(teacher, tok, task.read(sources, labelled=False), batch_size=2)
    assert [e.target for e in written] == plain


def test_translation_from_scratch_end_to_end(fr_en, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", "--task", "translation", "--preset", "marian-tiny", "--tokenizer", str(fr_en / "tok"),
                 "--train", str(fr_en / "train.jsonl"), "--eval", str(fr_en / "dev.jsonl"), "--out", str(out),
                 "--max-steps", "6", "--batch-size", "8", "--lr", "3e-3", "--num-beams", "2", "--max-target-length", "12",
                 "--eval-samples", "3", "--device", "cpu", "--no-progress"]) == 0
    assert "translation done: 24 examples, dev bleu" in capsys.readouterr().out
    saved = json.loads((out / "best" / "plmkit_task.json").read_text())
    assert saved["task"] == "translation" and saved["num_beams"] == 2 and saved["decoder_start_token_id"] is not None
    assert main(["evaluate", "--model", str(out / "best"), "--data", str(fr_en / "dev.jsonl"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "loss"} <= set(scores)
    assert scores["n"] == len(PAIRS)  # every record: --eval-samples is the training-time subset
    assert all(0 <= scores[k] <= 100 for k in ("bleu", "chrf", "rougeL"))
    translate = plmkit.pipeline("translation", model=out / "best")
    one = translate("serveur web léger et rapide")
    assert isinstance(one, list) and set(one[0]) == {"translation_text"}
    assert plmkit.pipeline("text2text-generation", model=out / "best")(["a", "b"])[1].keys() == {"generated_text"}
    with pytest.raises(ConfigError, match="not one for 'summarization'"):
        plmkit.pipeline("summarization", model=out / "best")


def test_summarization_warm_started_as_bert_to_bert(tmp_path, capsys):
    rows = [{"text": f"{s}. It is a package of Debian. Install it with apt.", "summary": t} for s, t in PAIRS]
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": r["text"], "summary": r["summary"]} for r in rows] * 2)
    out = tmp_path / "run"
    assert main(["finetune", "--task", "summarization", "--init", "bert2bert", "--model", str(h.tiny_model_dir()),
                 "--train", str(train), "--eval", str(train), "--out", str(out), "--max-steps", "3",
                 "--batch-size", "4", "--num-beams", "1", "--max-target-length", "8", "--eval-samples", "4",
                 "--dropout", "0.1", "--device", "cpu", "--no-progress"]) == 0
    assert "summarization done" in capsys.readouterr().out
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model_type"] == "encoder-decoder" and config["decoder_start_token_id"] is not None
    assert config["decoder"]["hidden_dropout_prob"] == 0.1 and config["encoder"]["hidden_dropout_prob"] == 0.1
    from transformers import EncoderDecoderModel  # Hugging Face loads what plmkit fine-tuned
    assert EncoderDecoderModel.from_pretrained(out / "model").config.decoder.add_cross_attention
    assert main(["finetune", "--task", "classification", "--init", "bert2bert", "--model", str(h.tiny_model_dir()),
                 "--train", str(train), "--out", str(tmp_path / "no"), "--max-steps", "1"]) == 2
    assert "--init bert2bert makes an encoder-decoder" in capsys.readouterr().err


def test_model_choices_that_do_not_fit_are_refused(fr_en, tmp_path):
    from plmkit.recipes.finetune import finetune
    base = dict(max_steps=1, device="cpu", progress_bar=False)
    with pytest.raises(ConfigError, match="give --model DIR .* or --preset NAME"):
        finetune("translation", h.tiny_model_dir(), fr_en / "train.jsonl", tmp_path / "a", preset="marian-tiny",
                 tokenizer=str(fr_en / "tok"), **base)
    with pytest.raises(ConfigError, match="--preset starts from random weights and has no tokenizer"):
        finetune("translation", None, fr_en / "train.jsonl", tmp_path / "b", preset="marian-tiny", **base)
    with pytest.raises(ConfigError, match="bert has no .seq2seq-lm. model"):
        finetune("translation", h.tiny_model_dir(), fr_en / "train.jsonl", tmp_path / "c", **base)
    with pytest.raises(ConfigError, match="are for encoders and decoders"):
        finetune("translation", None, fr_en / "train.jsonl", tmp_path / "d", preset="marian-tiny",
                 tokenizer=str(fr_en / "tok"), freeze_layers=1, **base)
