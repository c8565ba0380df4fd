"""`plmkit pretrain` end to end: tiny runs on English and Chinese text, HF loading, exact resume, errors."""
import json
import random

import pytest
import torch

from plmkit.cli import build_parser, main
from pretrain_helpers import check_resume_is_exact, read_metrics

EN = [
    "The river ran quietly past the old mill.", "Children played in the fields until dusk.",
    "A storm rolled in from the west, and the farmers hurried home.", "The baker opened his shop before sunrise.",
    "Letters arrived from the city every Tuesday.", "Nobody remembered who had planted the oak tree.",
    "The teacher read a story about a clever fox.", "Lanterns were lit along the narrow streets.",
    "Her grandmother kept bees behind the cottage.", "The train was late again, as it often was in winter.",
    "Merchants argued loudly over the price of wool.", "A small boat drifted toward the harbour.",
]
ZH = ["今天天气很好。", "我们一起去公园散步吧！", "这本书写得非常精彩。", "他每天早上六点起床。", "老师在教室里讲课。",
      "城市的夜景很美丽。", "妈妈做的饭菜最好吃。", "火车晚点了半个小时。", "孩子们在河边玩耍。", "这家商店的东西很便宜。"]


def corpus(path, sentences, n_docs=30, seed=0, joiner=" "):
    rng = random.Random(seed)
    docs = [joiner.join(rng.choice(sentences) for _ in range(rng.randint(2, 6))) for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return str(path)


def args(tmp_path, text, out, *extra):
    return ["pretrain", "--corpus", text, "--out", str(out), "--preset", "bert-tiny", "--vocab-size", "300",
            "--seq-len", "48", "--batch-size", "8", "--eval-fraction", "0.2", "--eval-batches", "2",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--log-every", "1", *extra]


def test_english_run_writes_an_hf_loadable_model(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    text = corpus(tmp_path / "en.txt", EN)
    out = tmp_path / "run"
    assert main(args(tmp_path, text, out, "--max-steps", "3", "--eval-every", "2")) == 0
    printed = capsys.readouterr()  # progress lines logged to stderr, the result printed to stdout
    assert "training a WordPiece tokenizer" in printed.err and "held-out: mlm_accuracy=" in printed.out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (out / "model" / name).is_file()
    assert (out / "training_curves.png").is_file()
    evals = [r for r in read_metrics(out) if "eval_mlm_accuracy" in r]
    assert [r["step"] for r in evals] == [2, 3]
    assert {"eval_nsp_accuracy", "eval_mlm_perplexity", "eval_mlm_loss"} <= set(evals[-1])

    # Hugging Face loads the checkpoint and computes our loss on the same batch
    from plmkit.data.pretraining import PretrainingCollator
    from plmkit.models.bert import BertForPreTraining
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.from_pretrained(out / "model")
    pairs = [{"input_ids": torch.tensor(tok.encode(a, b)).numpy(), "num_a": len(tok.encode(a)),
              "next_sentence_label": i % 2} for i, (a, b) in enumerate(zip(EN[:6], EN[6:]))]
    torch.manual_seed(0)
    batch = PretrainingCollator(tok, sparse_prediction=False)(pairs)
    ours = BertForPreTraining.from_pretrained(out / "model")(**batch)
    hf = transformers.BertForPreTraining.from_pretrained(out / "model").eval()
    with torch.no_grad():
        theirs = hf(**batch)
    assert torch.allclose(ours.loss, theirs.loss, atol=1e-5, rtol=0)
    real = batch["attention_mask"].bool()  # our encoder leaves padding positions at zero
    assert torch.allclose(ours.prediction_logits[real], theirs.prediction_logits[real], atol=1e-4, rtol=0)
    assert torch.allclose(ours.seq_relationship_logits, theirs.seq_relationship_logits, atol=1e-5, rtol=0)

    # a second run reuses the tokenizer and the tokenized corpus
    main(args(tmp_path, text, tmp_path / "run2", "--max-steps", "1", "--tokenizer", str(out / "tokenizer")))
    assert "reusing tokenized corpus" in capsys.readouterr().err


def test_chinese_mlm_run_with_whole_word_masking(tmp_path, capsys):
    text = corpus(tmp_path / "zh.txt", ZH, joiner="")
    out = tmp_path / "zh"
    assert main(args(tmp_path, text, out, "--max-steps", "2", "--objective", "mlm", "--whole-word-mask")) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    final = [r for r in read_metrics(out) if "eval_mlm_accuracy" in r][-1]
    assert "eval_nsp_accuracy" not in final and final["eval_mlm_perplexity"] > 1
    vocab = (out / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").split()
    assert "天" in vocab  # Chinese characters are single tokens


def test_resume_through_the_cli_is_exact(tmp_path):
    text = corpus(tmp_path / "en.txt", EN)
    run_file = tmp_path / "run.yaml"
    run_file.write_text("train:\n  schedule: constant\n  warmup_ratio: 0.0\n  seed: 3\nmodel:\n  hidden_dropout_prob: 0.1\n")
    from plmkit.tokenization import Tokenizer
    # one tokenizer for both runs: WordPiece training in `tokenizers` breaks ties differently from run to run
    Tokenizer.train_wordpiece(EN * 3, 300).save_pretrained(tmp_path / "tok")
    check_resume_is_exact(lambda out, *flags: main(args(tmp_path, text, out, *flags)), tmp_path,
                          "--config", str(run_file), "--eval-every", "2", "--tokenizer", str(tmp_path / "tok"))


def test_a_refused_run_leaves_the_earlier_run_untouched(tmp_path, capsys):
    text = corpus(tmp_path / "en.txt", EN)
    out = tmp_path / "run"
    assert main(args(tmp_path, text, out, "--max-steps", "2")) == 0
    saved = (out / "run.yaml").read_text()
    capsys.readouterr()
    assert main(args(tmp_path, text, out, "--max-steps", "2")) == 2  # a second fresh run over the first
    assert "--resume" in capsys.readouterr().err
    assert main(args(tmp_path, text, out, "--max-steps", "4", "--resume", "--seq-len", "32")) == 2
    assert "data.seq_len 48 -> 32" in capsys.readouterr().err
    assert (out / "run.yaml").read_text() == saved


def test_wrongly_typed_run_file_values_are_named(tmp_path, capsys):
    text = corpus(tmp_path / "en.txt", EN)
    bad = tmp_path / "bad.yaml"
    for section, line, message in [("data", 'mask_rate: "0.3"', "mask_rate (--mask-rate) must be float"),
                                   ("train", "grad_clip: '1.0'", "grad_clip (--grad-clip) must be float or None"),
                                   ("model", "layer_norm_eps: '1e-12'", "layer_norm_eps must be float")]:
        bad.write_text(f"{section}:\n  {line}\n")
        assert main(args(tmp_path, text, tmp_path / "o", "--max-steps", "1", "--config", str(bad))) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_empty_corpus_and_unknown_run_file_key_are_clear_errors(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n \n")
    assert main(args(tmp_path, str(tmp_path / "empty.txt"), tmp_path / "o", "--max-steps", "1")) == 2
    assert "empty corpus" in capsys.readouterr().err
    text = corpus(tmp_path / "en.txt", EN)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr_rate: 0.1\n")
    assert main(args(tmp_path, text, tmp_path / "o", "--max-steps", "1", "--config", str(bad))) == 2
    err = capsys.readouterr().err
    assert "train: unknown key(s) 'lr_rate'" in err and "bad.yaml" in err
    bad.write_text("data:\n  seq_length: 64\n")
    assert main(args(tmp_path, text, tmp_path / "o", "--max-steps", "1", "--config", str(bad))) == 2
    assert "seq_length" in capsys.readouterr().err
    assert main(args(tmp_path, text, tmp_path / "o")) == 2  # no length given
    assert "max_steps" in capsys.readouterr().err


def test_every_flag_has_a_description():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["pretrain"]
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 25 and all(a.help and len(a.help) > 10 for a in options)


def config_of(*argv):
    from plmkit.cli.pretrain import build_config
    return build_config(build_parser().parse_args(["pretrain", *argv]))


def test_train_flags_override_the_run_file_only_when_given(tmp_path):
    def knobs(train):
        return (train.grad_accum_steps, train.schedule, train.warmup_steps, train.warmup_ratio, train.grad_clip,
                train.keep_last, train.weight_decay)

    assert knobs(config_of("--max-steps", "5").train) == (1, "linear", 0, 0.06, 1.0, 2, 0.01)  # the defaults
    run_file = tmp_path / "run.yaml"
    run_file.write_text("train:\n  max_steps: 5\n  grad_accum_steps: 3\n  schedule: cosine\n  warmup_steps: 7\n"
                        "  grad_clip: 0.5\n  keep_last: 4\n  weight_decay: 0.1\n")
    assert knobs(config_of("--config", str(run_file)).train) == (3, "cosine", 7, 0.0, 0.5, 4, 0.1)
    given = config_of("--config", str(run_file), "--grad-accum-steps", "2", "--schedule", "constant",
                      "--warmup-ratio", "0.1", "--grad-clip", "0", "--keep-last", "1", "--weight-decay", "0")
    assert knobs(given.train) == (2, "constant", 0, 0.1, None, 1, 0.0)  # --warmup-ratio replaces warmup_steps
    run_file.write_text("train:\n  max_steps: 5\n  warmup_ratio: 0.2\n")
    assert knobs(config_of("--config", str(run_file), "--warmup-steps", "3").train)[2:4] == (3, 0.0)
    with pytest.raises(SystemExit):
        config_of("--schedule", "step")


def test_vocab_size_and_case_are_none_unless_given():
    assert (config_of("--max-steps", "1").data.vocab_size, config_of("--max-steps", "1").data.lowercase) == (None, None)
    data = config_of("--max-steps", "1", "--vocab-size", "500", "--cased").data
    assert (data.vocab_size, data.lowercase) == (500, False)


def test_objective_clm_takes_the_train_flags_and_names_bert_only_ones():
    from plmkit.errors import ConfigError
    base = ["--objective", "clm", "--corpus", "c.txt", "--out", "o", "--max-steps", "1"]
    train = config_of(*base, "--grad-accum-steps", "2", "--schedule", "constant", "--warmup-ratio", "0.1",
                      "--grad-clip", "0.5", "--keep-last", "3").train
    assert {k: getattr(train, k) for k in ("grad_accum_steps", "schedule", "warmup_ratio", "grad_clip", "keep_last")} == \
        {"grad_accum_steps": 2, "schedule": "constant", "warmup_ratio": 0.1, "grad_clip": 0.5, "keep_last": 3}
    for flag in ("--cased", "--no-unigram-init", "--sinusoidal-positions", "--mask-rate 0.2", "--pre-ln"):
        with pytest.raises(ConfigError, match=flag.split()[0]):
            config_of(*base, *flag.split())


def test_each_objective_has_its_defaults_declared_once():
    bert, clm = config_of("--max-steps", "1"), config_of("--max-steps", "1", "--objective", "clm")
    bart = config_of("--max-steps", "1", "--objective", "denoise")
    assert (bert.model.preset, bert.data.seq_len, bert.train.lr, bert.train.schedule) == ("bert-mini", 128, 5e-4, "linear")
    assert (clm.model.preset, clm.data.seq_len, clm.train.lr, clm.train.schedule) == ("gpt2-tiny", 256, 1e-3, "cosine")
    assert (bart.model.preset, bart.data.seq_len, bart.train.lr, bart.train.schedule) == ("bart-tiny", 256, 1e-3, "linear")
    assert clm.train.betas == (0.9, 0.95) and clm.data.mask_rate is None and clm.model.unigram_bias_init is None
    assert (bert.data.mask_rate, bert.data.poisson_lambda, bert.data.permute_sentences) == (0.15, None, None)
    assert (bart.data.mask_rate, bart.data.poisson_lambda, bart.data.permute_sentences) == (0.3, 3.0, True)
    assert bart.train.betas == (0.9, 0.98) and bart.data.whole_word_mask is None and bart.model.norm_first is None
    assert config_of("--max-steps", "1", "--objective", "denoise", "--mask-rate", "0.4",
                     "--no-permute-sentences").data.mask_rate == 0.4
    assert (bert.train.save_every, clm.train.save_every, bart.train.save_every) == (1000, 1000, 1000)


def test_the_help_shows_each_objectives_default(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 0.15; objective clm: off; objective denoise: 0.3)",
                  "(default: off; objective denoise: 3.0)", "(default: bert-mini; objective clm: gpt2-tiny; "
                  "objective denoise: bart-tiny)"):
        assert shown in text


def test_old_flag_spellings_parse():
    old = config_of("--max-steps", "1", "--pre-ln", "--cased", "--no-unigram-init", "--sinusoidal-positions",
                    "--dropout", "0.1", "--grad-accum-steps", "3", "--no-progress", "--metric", "mlm_loss",
                    "--whole-word-mask", "--min-doc-tokens", "0")
    assert (old.model.norm_first, old.model.unigram_bias_init, old.model.sinusoidal_position_init,
            old.model.dropout) == (True, False, True, 0.1)
    assert (old.data.lowercase, old.data.whole_word_mask, old.data.min_doc_tokens) == (False, True, 0)
    assert (old.train.grad_accum_steps, old.train.progress_bar, old.train.metric_for_best) == (3, False, "mlm_loss")
    assert config_of("--max-steps", "1", "--grad-accum", "2").train.grad_accum_steps == 2  # finetune's spelling
    from plmkit.training.pretrain import bert_config
    config = bert_config(old.model)
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.norm_first) == (0.1, 0.1, True)


RUN_FILE = """model:
  preset: bert-tiny
  hidden_dropout_prob: 0.1
data:
  seq_len: 48
  mask_rate: 0.2
train:
  max_steps: 4
  lr: 1e-3
  schedule: constant
"""


def test_run_file_and_flags_equal_the_flags_alone(tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(RUN_FILE)
    flags = ["--preset", "bert-tiny", "--seq-len", "48", "--mask-rate", "0.2", "--max-steps", "4", "--lr", "1e-3",
             "--schedule", "constant", "--corpus", "c.txt", "--out", "o"]
    from_file = config_of("--config", str(run_file), "--corpus", "c.txt", "--out", "o")
    alone = config_of(*flags)
    alone.model.config["hidden_dropout_prob"] = 0.1  # a family config field: run files only
    assert from_file == alone
    assert config_of("--config", str(run_file), *flags) == from_file  # flags repeating the file change nothing
    given = config_of("--config", str(run_file), "--seq-len", "32", "--max-steps", "2")
    assert (given.data.seq_len, given.train.max_steps, given.data.mask_rate) == (32, 2, 0.2)  # flags win


def test_print_config_fed_back_reproduces_the_run(tmp_path, capsys):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(RUN_FILE)
    for extra in ([], ["--objective", "clm", "--preset", "llama-tiny", "--time-budget", "10m"],
                  ["--objective", "denoise", "--preset", "bart-small", "--poisson-lambda", "2.5", "--mask-rate", "0.4",
                   "--max-steps", "9"]):
        argv = ["--config", str(run_file), "--corpus", "c.txt", "--out", "o", "--warmup-steps", "3", *extra]
        if extra:  # a decoder or BART: the file's BERT model (bert-tiny, hidden_dropout_prob) is not theirs
            argv = argv[2:]
        assert main(["pretrain", "--print-config", *argv]) == 0
        printed = tmp_path / "printed.yaml"
        printed.write_text(capsys.readouterr().out)
        assert config_of("--config", str(printed)) == config_of(*argv)


def test_objective_clm_from_a_run_file(tmp_path, capsys):
    from clm_helpers import corpus_text
    (tmp_path / "c.txt").write_text(corpus_text(2))
    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"out: {tmp_path / 'o'}\nmodel:\n  preset: llama-tiny\n  rms_norm_eps: 1e-5\n"
                        f"data:\n  objective: clm\n  corpus: [{tmp_path / 'c.txt'}]\n  vocab_size: 300\n  seq_len: 32\n"
                        f"  batch_size: 4\n  eval_fraction: 0.2\n  cache_dir: {tmp_path / 'cache'}\n"
                        "train:\n  max_steps: 2\n  progress_bar: false\n")
    assert main(["pretrain", "--config", str(run_file), "--lr", "3e-3"]) == 0
    assert "held-out perplexity" in capsys.readouterr().out
    config = json.loads((tmp_path / "o" / "model" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["rms_norm_eps"] == 1e-5 and config["max_position_embeddings"] == 32
    saved = (tmp_path / "o" / "run.yaml").read_text()
    assert "lr: 0.003" in saved and "objective: clm" in saved and "rms_norm_eps: 1.0e-05" in saved
    assert main(["pretrain", "--config", str(tmp_path / "o" / "run.yaml"), "--max-steps", "3", "--resume"]) == 2
    assert "train.max_steps 2 -> 3" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(tmp_path / "o" / "run.yaml"), "--max-steps", "3",
                 "--resume-with-changes"]) == 0
    assert [r["step"] for r in read_metrics(tmp_path / "o") if "loss" in r][-1] == 3


def test_a_run_started_by_the_old_code_resumes(tmp_path, capsys):
    """An output directory of plmkit before run.yaml: its pretrain_config.json is what --resume checks."""
    text = corpus(tmp_path / "en.txt", EN)
    out = tmp_path / "run"
    assert main(args(tmp_path, text, out, "--max-steps", "2")) == 0
    new = (out / "run.yaml").read_text()
    import yaml
    saved = yaml.safe_load(new)
    saved["model"] = {"preset": "bert-tiny", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                      "unigram_bias_init": True, "sinusoidal_position_init": False}  # the old model section
    (out / "run.yaml").unlink()
    (out / "pretrain_config.json").write_text(json.dumps(saved, indent=2) + "\n")
    import torch
    for kept in (out / "checkpoints").glob("*/fingerprint.json"):
        kept.unlink()  # the old code kept none, neither there nor in its trainer state
        state = torch.load(kept.parent / "trainer_state.pt", weights_only=True)
        state.pop("fingerprint")
        torch.save({**state, "format": 1}, kept.parent / "trainer_state.pt")
    capsys.readouterr()
    assert main(args(tmp_path, text, out, "--max-steps", "4", "--resume", "--seq-len", "32")) == 2
    err = capsys.readouterr().err
    assert "pretrain_config.json" in err and "data.seq_len 48 -> 32" in err
    assert main(args(tmp_path, text, out, "--max-steps", "4", "--resume", "--dropout", "0.1")) == 2
    assert "model.hidden_dropout_prob 0.0 -> 0.1" in capsys.readouterr().err
    assert main(args(tmp_path, text, out, "--max-steps", "4", "--resume")) == 0
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2, 3, 4]
    assert (out / "run.yaml").read_text() == new.replace("max_steps: 2", "max_steps: 4")


def test_two_spellings_of_one_setting_that_contradict_each_other_are_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--lowercase", "--cased"])
    assert "--cased contradicts a flag given before it for the same setting (lowercase: True, then False)" in \
        capsys.readouterr().err
    assert build_parser().parse_args(["pretrain", "--cased", "--no-lowercase"])  # the same value twice is fine
