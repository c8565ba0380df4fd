import io
import json
import sys

import pytest

import finetune_helpers as h
from plmkit.cli import main


def test_finetune_evaluate_predict_classification(tmp_path, capsys, monkeypatch):
    d = h.data_dir("en-sentiment")
    train = h.head_lines(d / "movie_reviews.train.jsonl", tmp_path / "train.jsonl", 200)
    test = h.head_lines(d / "movie_reviews.test.jsonl", tmp_path / "test.jsonl", 60)
    out = tmp_path / "run"
    assert main(["finetune", "--task", "classification", "--model", str(h.tiny_model_dir()), "--train", str(train),
                 "--eval", str(test), "--out", str(out), "--epochs", "1", "--lr", "1e-3", "--batch-size", "16",
                 "--max-length", "64", "--freeze-layers", "1", "--layer-lr-decay", "0.9", "--head-lr", "2e-3",
                 "--dropout", "0.2", "--device", "cpu", "--no-progress"]) == 0
    assert (out / "model" / "plmkit_task.json").is_file() and (out / "best").is_dir()
    from plmkit.recipes.finetune import load_run
    run = load_run(out / "run.yaml")  # the effective run file, written into the output directory
    assert (run.task, run.model.dropout, run.classification.max_length, run.train.head_lr) == ("classification", 0.2, 64, 2e-3)
    config = json.loads((out / "model" / "config.json").read_text())  # the tiny model was saved with dropout 0
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.2
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(test), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"accuracy", "f1", "macro_f1"} <= set(metrics) and metrics["n"] == 60
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(test), "--device", "cpu"]) == 0
    assert "accuracy" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "great"}\n{"text": "awful"}\n'))
    assert main(["predict", "--model", str(out / "model"), "--input", "-", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(r["label"] in ("negative", "positive") and "probabilities" in r for r in rows)


def test_finetune_qa_lora_and_predict_squad(tmp_path, capsys):
    data = h.squad_file(tmp_path / "squad.json")
    out = tmp_path / "qa"
    assert main(["finetune", "--task", "qa", "--model", str(h.tiny_model_dir()), "--train", str(data),
                 "--out", str(out), "--max-steps", "3", "--max-length", "48", "--doc-stride", "16",
                 "--lora-rank", "4", "--lora-targets", "q,v", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(data), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)  # SQuAD v2 data: also the best no-answer threshold
    assert {"exact_match", "f1", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"} <= set(metrics)
    assert metrics["null_score_diff_threshold"] == 0
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(data), "--json", "--device", "cpu",
                 "--null-score-diff-threshold", str(metrics["best_f1_thresh"])]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(metrics["best_f1"])
    assert main(["predict", "--model", str(out / "model"), "--input", str(data), "--device", "cpu",
                 "--output", str(tmp_path / "p.jsonl"), "--null-score-diff-threshold", "1e9"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    assert all(r["answer"] for r in rows)  # a huge threshold: never "no answer"


def test_cli_reports_data_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": 3, "label": "b"}\n')
    code = main(["finetune", "--task", "classification", "--model", str(h.tiny_model_dir()), "--train", str(bad),
                 "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress"])
    assert code == 2 and "bad.jsonl:2" in capsys.readouterr().err


def parse(argv):
    """The run `plmkit finetune ARGV` would do (not run)."""
    from plmkit.cli import build_parser
    from plmkit.cli.finetune import run_of_args
    return run_of_args(build_parser().parse_args(["finetune", *argv]))


BASE = ["--task", "ner", "--model", "m", "--train", "t.conll", "--out", "o"]


def test_every_old_flag_spelling_still_parses():
    old = BASE + ["--eval", "d.conll", "--epochs", "2", "--max-steps", "5", "--lr", "1e-3", "--batch-size", "8",
                  "--max-length", "64", "--weight-decay", "0.1", "--warmup-ratio", "0.2", "--schedule", "cosine",
                  "--grad-clip", "0", "--grad-accum", "2", "--dropout", "0.1", "--freeze-embeddings",
                  "--freeze-layers", "1", "--layer-lr-decay", "0.9", "--head-lr", "1e-2",
                  "--lora-rank", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--lora-targets", "q,k,v",
                  "--eval-every", "3", "--early-stopping-patience", "2", "--metric", "f1", "--stride", "8",
                  "--group-by-length", "--seed", "1", "--device", "cpu", "--precision", "fp32", "--save-every", "4",
                  "--resume", "--log-every", "2", "--no-progress"]
    run = parse(old)
    assert (run.task, run.out, run.resume, run.model.path, run.data.train, run.data.eval) == \
        ("ner", "o", True, "m", "t.conll", "d.conll")
    m, d, t, task = run.model, run.data, run.train, run.ner
    assert (m.dropout, m.freeze_embeddings, m.freeze_layers, m.freeze_body) == (0.1, True, 1, False)
    assert parse(BASE + ["--freeze-body"]).model.freeze_body
    assert (m.lora_rank, m.lora_alpha, m.lora_dropout, m.lora_targets) == (4, 8.0, 0.1, ("q", "k", "v"))
    assert (d.batch_size, d.group_by_length, task.max_length, task.stride) == (8, True, 64, 8)
    assert (t.epochs, t.max_steps, t.lr, t.weight_decay, t.warmup_ratio, t.schedule) == (2.0, 5, 1e-3, 0.1, 0.2, "cosine")
    assert (t.grad_clip, t.grad_accum_steps, t.layer_lr_decay, t.head_lr, t.eval_every) == (None, 2, 0.9, 1e-2, 3)
    assert (t.early_stopping_patience, t.metric_for_best, t.seed, t.device, t.precision) == (2, "f1", 1, "cpu", "fp32")
    assert (t.save_every, t.log_every, t.progress_bar) == (4, 2, False)
    qa = parse(["--task", "qa", "--model", "m", "--train", "s.json", "--out", "o", "--doc-stride", "16",
                "--max-answer-length", "20"])
    assert (qa.qa.doc_stride, qa.qa.max_answer_length, qa.qa.max_length) == (16, 20, 128)
    defaults = parse(BASE)  # fine-tuning's defaults, declared once
    assert (defaults.train.epochs, defaults.train.warmup_ratio, defaults.train.lr, defaults.data.batch_size) == \
        (3.0, 0.1, 5e-5, 16)


def test_a_run_file_plus_flags_is_the_run_of_the_flags_alone(tmp_path, capsys):
    flags = BASE + ["--lr", "1e-3", "--stride", "8", "--lora-rank", "2", "--max-steps", "9"]
    alone = parse(flags)
    path = tmp_path / "run.yaml"
    path.write_text("task: ner\nout: o\nmodel:\n  path: m\n  lora_rank: 2\ndata:\n  train: t.conll\n"
                    "train:\n  lr: 1e-3\n  max_steps: 3\nner:\n  stride: 8\n")
    assert parse(["--config", str(path), "--max-steps", "9"]) == alone  # flags given win over the file
    assert parse(["--config", str(path), "--max-steps", "9", "--task", "ner"]) == alone
    from plmkit.cli import main
    assert main(["finetune", *flags, "--print-config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert parse(["--config", str(printed)]) == alone  # --print-config fed back reproduces the run


def test_finetune_flags_that_make_no_sense_are_refused_by_name(capsys):
    from plmkit.cli import main
    from plmkit.errors import ConfigError
    with pytest.raises(ConfigError, match=r"lora_targets \(--lora-targets\) needs lora_rank"):
        parse(BASE + ["--lora-targets", "q,k"])
    with pytest.raises(ConfigError, match=r"--stride is a setting of ner, not of --task classification"):
        parse(["--task", "classification", "--model", "m", "--train", "t", "--out", "o", "--stride", "4"])
    with pytest.raises(ConfigError, match="say the pretrained model directory: --model DIR"):
        parse(["--task", "ner", "--train", "t", "--out", "o"])
    assert main(["finetune", "--model", "m", "--train", "t", "--out", "o"]) == 2
    assert "say which task to fine-tune: --task classification|ner|relation|qa|sft" in capsys.readouterr().err


def finetune_flags() -> dict:
    """{flag: its argparse action} of `plmkit finetune`."""
    import argparse

    from plmkit.cli import build_parser
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in commands.choices["finetune"]._actions for flag in action.option_strings}


def test_finetune_help_gives_each_tasks_defaults_and_which_tasks_a_setting_is_for():
    flags = finetune_flags()
    assert flags["--batch-size"].help.endswith("(default: 16; sft: 8)")
    assert flags["--lr"].help.endswith("(default: 5e-05; sft: 0.0003)")
    assert flags["--schedule"].help.endswith("(default: linear; sft: cosine)")
    assert flags["--group-by-length"].help.endswith("(default: off; sft: on)")
    # the same for every task; --max-steps or --time-budget alone ends a run (Hugging Face's max_steps too)
    assert flags["--epochs"].help.endswith("off: 3 unless --max-steps or --time-budget is given (default: off)")
    assert (parse(BASE).train.epochs, parse(BASE + ["--max-steps", "100"]).train.epochs) == (3.0, None)
    assert flags["--new-head"].help.startswith("start the task head from scratch for the training data's labels")
    assert parse(BASE + ["--new-head"]).model.new_head is True
    sft = parse(["--task", "sft", "--model", "m", "--train", "d.jsonl", "--out", "o"])  # what the help says
    assert (sft.data.batch_size, sft.train.lr, sft.train.schedule, sft.data.group_by_length) == (8, 3e-4, "cosine", True)
    assert flags["--stride"].help.startswith("ner: ") and flags["--doc-stride"].help.startswith("qa: ")
    assert flags["--system"].help.startswith("sft: ") and not flags["--max-length"].help.startswith("classification")
    for flag in ("--task", "--train", "--out"):
        assert flags[flag].help.endswith("(required: the flag or the run file)")
    # a task setting: each task's own default where it differs (what the run gets: --print-config)
    assert flags["--max-target-length"].help.endswith("(default: 128; summarization: 64)")
    assert flags["--no-repeat-ngram-size"].help.endswith("(default: 0; summarization: 3)")
    summarization = parse(["--task", "summarization", "--model", "m", "--train", "d.jsonl", "--out", "o"])
    settings = summarization.task_settings
    assert (settings.max_target_length, settings.no_repeat_ngram_size) == (64, 3)


def test_a_bad_flag_value_is_one_error_line_after_a_one_line_usage(capsys):
    from plmkit.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", *BASE, "--lr", "abc"])
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(err) == 2 and err[0].startswith("usage: plmkit finetune --task TASK")
    assert err[1] == "plmkit finetune: error: argument --lr: lr must be float, got 'abc'"


def test_an_output_directory_that_is_a_file_is_a_named_error(tmp_path, capsys):
    from plmkit.cli import main
    (tmp_path / "taken").write_text("x")
    (tmp_path / "m").mkdir()
    assert main(["finetune", "--task", "ner", "--model", str(tmp_path / "m"), "--train", "t.conll",
                 "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == (f"plmkit finetune: error: cannot write into directory {tmp_path / 'taken'} "
                                       "(it is a file); give another with --out\n")


def test_settings_that_another_makes_meaningless_are_refused_by_name():
    from plmkit.errors import ConfigError
    for flags, message in [
        (["--early-stopping-patience", "2"], r"early_stopping_patience \(--early-stopping-patience\) needs evaluation data"),
        (["--metric", "f1"], r"metric_for_best \(--metric-for-best\) needs evaluation data"),
        (["--eval-batch-size", "8"], r"eval_batch_size \(--eval-batch-size\) needs evaluation data"),
        (["--eval", "d.conll", "--eval-fraction", "0.1"], r"eval_fraction \(--eval-fraction\) holds out"),
        (["--keep-last", "3"], r"keep_last \(--keep-last\) needs save_every"),
        (["--lora-alpha", "8"], r"lora_alpha \(--lora-alpha\) needs lora_rank"),
        (["--freeze-body", "--freeze-layers", "1"], r"freeze_body \(--freeze-body\) freezes the whole body"),
        (["--freeze-body", "--lora-rank", "2"], r"LoRA adapters would be frozen too"),
        (["--freeze-body", "--layer-lr-decay", "0.5"], r"layer_lr_decay \(--layer-lr-decay\) scales"),
        (["--lora-rank", "2", "--lora-targets", ""], r"lora_targets \(--lora-targets\) is empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse(BASE + flags)
    parse(BASE + ["--eval-fraction", "0.1", "--metric", "f1", "--keep-last", "3", "--save-every", "5"])
    sft = ["--task", "sft", "--model", "m", "--train", "d.jsonl", "--out", "o"]
    assert parse(sft + ["--eval", "e.jsonl"]).data.eval_fraction == 0.0  # --eval replaces sft's default fraction


def test_a_number_with_an_underscore_is_a_typo_not_ten(capsys):
    with pytest.raises(SystemExit):
        parse(BASE + ["--lr", "1_0"])
    assert "lr must be float, got '1_0'" in capsys.readouterr().err


def test_a_run_file_with_a_bom_names_the_bad_byte_from_its_start(tmp_path, capsys):
    run_file = tmp_path / "run.yaml"
    run_file.write_bytes(b"\xef\xbb\xbftask: classification\nout: \xc9\n")
    assert main(["finetune", "--config", str(run_file)]) == 2
    assert f"{run_file}: not UTF-8 text (byte 29)" in capsys.readouterr().err
