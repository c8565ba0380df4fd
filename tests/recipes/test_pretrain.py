"""plmkit.recipes.pretrain: one run type for every objective, its checks, and resuming older output directories."""
import json

import pytest

from plmkit.errors import ConfigError, TrainingError
from plmkit.recipes.pretrain import PretrainModel, PretrainRun, check_run_dir, saved_run

LENGTH = {"train": {"max_steps": 1}}


def build(**sections):
    return PretrainRun.build({**LENGTH, **sections})


def test_bert_only_settings_are_refused_for_a_decoder_by_name_and_flag():
    with pytest.raises(ConfigError) as err:
        build(data={"objective": "clm", "mask_rate": 0.2, "lowercase": False}, model={"norm_first": True})
    message = str(err.value)
    for named in ("data.mask_rate (--mask-rate) is for mlm+nsp, mlm, denoise", "data.lowercase (--lowercase, --cased)",
                  "model.norm_first (--pre-ln, --norm-first)", "not used by --objective clm"):
        assert named in message
    with pytest.raises(ConfigError, match=r"data.mask_rate: --objective mlm\+nsp needs a value"):
        build(data={"mask_rate": None})


def test_settings_of_some_objectives_are_refused_by_name_for_the_others():
    with pytest.raises(ConfigError) as err:
        build(data={"objective": "denoise", "whole_word_mask": True, "nsp_prob": 0.3},
              model={"unigram_bias_init": False})
    message = str(err.value)
    for named in ("not used by --objective denoise", "data.whole_word_mask (--whole-word-mask) is for mlm+nsp, mlm",
                  "data.nsp_prob (--nsp-prob)", "model.unigram_bias_init (--unigram-bias-init, --no-unigram-init)"):
        assert named in message
    for objective in ("mlm+nsp", "mlm", "clm"):
        with pytest.raises(ConfigError, match=r"not used by --objective .*data.poisson_lambda \(--poisson-lambda\) "
                                              r"is for denoise; data.permute_sentences \(--permute-sentences"):
            build(data={"objective": objective, "poisson_lambda": 2.0, "permute_sentences": False})
    with pytest.raises(ConfigError, match=r"data.poisson_lambda: --objective denoise needs a value"):
        build(data={"objective": "denoise", "poisson_lambda": None})
    with pytest.raises(ConfigError, match=r"poisson_lambda \(--poisson-lambda\) must be > 0, got 0"):
        build(data={"objective": "denoise", "poisson_lambda": 0})
    shared = build(data={"objective": "denoise", "mask_rate": 0.4, "min_doc_tokens": 0})  # read by BERT and BART
    assert (shared.data.mask_rate, shared.data.min_doc_tokens, shared.data.poisson_lambda) == (0.4, 0, 3.0)


def test_presets_are_checked_for_the_objective():
    with pytest.raises(ConfigError, match="decoder.*'bert-mini'"):
        build(data={"objective": "clm"}, model={"preset": "bert-mini"})
    with pytest.raises(ConfigError, match="clm trains a decoder: preset 'bart-tiny' is a bart model"):
        build(data={"objective": "clm"}, model={"preset": "bart-tiny"})
    with pytest.raises(ConfigError, match="unknown model preset 'gpt2-tiny'.*bert-mini"):
        build(model={"preset": "gpt2-tiny"})
    with pytest.raises(ConfigError, match="denoise trains a BART model: preset 'marian-tiny' is a marian model, not "
                                          "bart; bart seq2seq-lm presets: bart-tiny"):
        build(data={"objective": "denoise"}, model={"preset": "marian-tiny"})
    with pytest.raises(ConfigError, match="unknown preset 'bart-smal' for bart seq2seq-lm \\(did you mean 'bart-small'"):
        build(data={"objective": "denoise"}, model={"preset": "bart-smal"})
    with pytest.raises(ConfigError, match=r"seq_len=600 exceeds the model's max_position_embeddings=512; lower --seq-len"):
        build(data={"objective": "denoise", "seq_len": 600}, model={"max_position_embeddings": 512})
    with pytest.raises(ConfigError, match="unknown key.*'d_modle'"):
        build(data={"objective": "denoise"}, model={"d_modle": 64})


def test_family_config_fields_go_flat_or_nested_and_are_checked():
    flat = build(model={"layer_norm_eps": 1e-6, "dropout": 0.1})
    nested = build(model={"config": {"layer_norm_eps": 1e-6}, "dropout": 0.1})
    assert flat == nested and flat.model.config == {"layer_norm_eps": 1e-6}
    assert flat.to_dict()["model"]["layer_norm_eps"] == 1e-6 and "config" not in flat.to_dict()["model"]
    assert PretrainRun.build(flat.to_dict()) == flat
    with pytest.raises(ConfigError, match=r"'hidden_sise' \(did you mean 'hidden_size'\?\)"):
        build(model={"hidden_sise": 64})
    with pytest.raises(ConfigError, match="'preset' in config is a setting of its own"):
        PretrainModel.from_dict({"config": {"preset": "bert-tiny"}})
    # a later layer's field replaces the earlier one's, whichever way each was written
    later = PretrainRun.build(LENGTH, {"model": {"config": {"layer_norm_eps": 1e-6}}}, {"model": {"layer_norm_eps": 1e-5}})
    assert later.model.config == {"layer_norm_eps": 1e-5}


def test_the_objective_picks_its_defaults_at_any_layer():
    # the run file says clm, a flag layer says nothing about it: the decoder defaults apply
    run = PretrainRun.build({"data": {"objective": "clm"}}, LENGTH)
    assert (run.model.preset, run.train.lr, run.data.seq_len) == ("gpt2-tiny", 1e-3, 256)
    run = PretrainRun.build({"data": {"objective": "clm"}}, {**LENGTH, "data": {"objective": "mlm"}})
    assert (run.model.preset, run.train.lr, run.data.seq_len, run.data.mask_rate) == ("bert-mini", 5e-4, 128, 0.15)


def fake_checkpoint(out):
    (out / "checkpoints" / "step-000002").mkdir(parents=True)


def test_a_legacy_clm_config_json_is_read_for_resume(tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out)
    train = build(data={"objective": "clm"}).train.to_dict()
    (out / "clm_config.json").write_text(json.dumps({  # what run_clm_pretraining(**kwargs) wrote
        "corpus": ["c.txt"], "tokenizer": None, "vocab_size": 300, "preset": "gpt2-tiny", "seq_len": 32,
        "batch_size": 4, "dropout": 0.0, "eval_fraction": 0.2, "eval_batches": 20, "model_overrides": {"n_inner": 256},
        "train": train}))
    path, _, before = saved_run(out)
    assert path.name == "clm_config.json" and before.data.objective == "clm" and before.model.config == {"n_inner": 256}
    same = {"out": str(out), "data": {"objective": "clm", "corpus": ["c.txt"], "seq_len": 32, "batch_size": 4,
                                       "eval_fraction": 0.2, "cache_dir": "elsewhere"},
            "model": {"n_inner": 256}, "train": {"max_steps": 5}}
    check_run_dir(out, PretrainRun.build(same), resume=True)  # the cache directory was not saved: not compared
    with pytest.raises(TrainingError, match="--resume"):
        check_run_dir(out, PretrainRun.build(same), resume=False)
    changed = {**same, "data": {**same["data"], "seq_len": 64}, "model": {"preset": "gpt2-mini", "n_inner": 256}}
    with pytest.raises(ConfigError, match=r"clm_config.json.*model.preset 'gpt2-tiny' -> 'gpt2-mini'.*data.seq_len 32 -> 64"):
        check_run_dir(out, PretrainRun.build(changed), resume=True)


def test_run_yaml_wins_over_a_legacy_file(tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out)
    (out / "pretrain_config.json").write_text(json.dumps({"data": {"seq_len": 48}, **LENGTH}))
    build(data={"seq_len": 64}).save(out / "run.yaml")
    assert saved_run(out)[0].name == "run.yaml"
    with pytest.raises(ConfigError, match="data.seq_len 64 -> 48"):
        check_run_dir(out, build(data={"seq_len": 48}), resume=True)


def test_a_dropout_given_later_replaces_the_family_rates_given_earlier():
    from plmkit.training.pretrain import bert_config

    def rates(*layers):
        config = bert_config(PretrainRun.build(LENGTH, *layers).model)
        return config.hidden_dropout_prob, config.attention_probs_dropout_prob

    run_file = {"model": {"hidden_dropout_prob": 0.1}}
    assert rates(run_file) == (0.1, 0.0)
    assert rates(run_file, {"model": {"dropout": 0.2}}) == (0.2, 0.2)  # the flag wins, as --dropout always did
    assert rates({"model": {"hidden_dropout_prob": 0.1, "dropout": 0.2}}) == (0.1, 0.2)  # together: the field


def test_a_decoders_family_fields_are_checked_before_any_work():
    clm = {"objective": "clm"}
    run = build(data=clm, model={"preset": "llama-tiny", "rms_norm_eps": 1e-5, "dropout": 0.1})
    from plmkit.training.clm import causal_lm_config
    config = causal_lm_config(run.model.preset, run.data.seq_len, run.model.dropout, run.model.config)
    assert (config.rms_norm_eps, config.attention_dropout, config.max_position_embeddings) == (1e-5, 0.1, 256)
    with pytest.raises(ConfigError, match="unknown key.*'rms_norm_epz'"):
        build(data=clm, model={"preset": "llama-tiny", "rms_norm_epz": 1e-5})
    with pytest.raises(ConfigError, match="n_inner must be"):
        build(data=clm, model={"n_inner": "64"})
    with pytest.raises(ConfigError, match="unknown preset 'gpt2-huge'"):
        build(data=clm, model={"preset": "gpt2-huge"})


def test_settings_that_need_held_out_data_or_nsp_pairs_are_refused_without_them():
    with pytest.raises(ConfigError, match=r"metric_for_best \(--metric-for-best\) needs held-out documents"):
        build(data={"eval_fraction": 0.0}, train={"max_steps": 1, "metric_for_best": "loss"})
    with pytest.raises(ConfigError, match=r"eval_batches \(--eval-batches\) needs held-out documents"):
        build(data={"eval_fraction": 0.0, "eval_batches": 5})
    with pytest.raises(ConfigError, match=r"nsp_prob \(--nsp-prob\) shapes next-sentence pairs"):
        build(data={"objective": "mlm", "nsp_prob": 0.3})


def test_a_cache_directory_inside_the_corpus_or_where_none_can_be_made_is_refused_first(tmp_path):
    from plmkit.recipes.pretrain import run
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Some text.\n" * 20)
    (tmp_path / "a-file").write_text("x")
    for cache, message in [(corpus / "cache", r"--cache-dir .*cache is in the input --corpus"),
                           (tmp_path / "a-file" / "cache", r"a-file is a file, not a directory")]:
        with pytest.raises(ConfigError, match=message):
            run(build(out=str(tmp_path / "out"), data={"corpus": [str(corpus)], "cache_dir": str(cache)}))
        assert not (tmp_path / "out").exists() and not (corpus / "cache").exists()



def test_a_tokenizer_left_by_a_failed_start_is_reused_only_by_a_run_that_would_train_the_same(tmp_path, monkeypatch,
                                                                                             caplog):
    from clm_helpers import PARAGRAPHS, clm_run, corpus_text
    from plmkit.recipes.pretrain import run
    from plmkit.tokenization import Tokenizer
    from plmkit.training import clm
    from plmkit.training.vocab import SOURCE_FILE
    (tmp_path / "a.txt").write_text(corpus_text())
    (tmp_path / "b.txt").write_text("\n\n".join(f"Zebra {i} grazed. " + PARAGRAPHS[i % 6] for i in range(30)) + "\n")
    out, tokenizer = tmp_path / "run", tmp_path / "run" / "tokenizer"

    def start(corpus, resume=False, **settings):
        caplog.clear()
        settings = {**dict(vocab_size=300, seq_len=32, batch_size=4, max_steps=1, progress_bar=False,
                           cache_dir=tmp_path / "cache"), **settings}
        with caplog.at_level("INFO", logger="plmkit"):
            return run(clm_run(tmp_path / corpus, out, **settings), resume=resume)

    def failing_start(corpus, **settings):  # fails once its tokenizer is there
        with monkeypatch.context() as patch:
            patch.setattr(clm, "build_causal_lm", lambda *args, **kwargs: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                start(corpus, **settings)
        assert sorted(p.name for p in out.iterdir()) == [".plmkit.lock", "tokenizer"]
        return (tokenizer / "tokenizer.json").read_bytes()

    def trained_on():
        return sorted(json.loads((tokenizer / SOURCE_FILE).read_text())["corpus"])

    trained = failing_start("a.txt")
    assert failing_start("a.txt") == trained and any("reusing the tokenizer" in m for m in caplog.messages)
    failing_start("a.txt", vocab_size=400)  # another size: trained anew
    assert any("is not this run's tokenizer: vocab_size 300 -> 400; a new one is trained" in m for m in caplog.messages)
    start("b.txt")  # another corpus: trained anew, on it
    [why] = [m for m in caplog.messages if "(left by an earlier start) is not this run's tokenizer" in m]
    assert "it was trained on another corpus (a.txt; now b.txt); vocab_size 400 -> 300" in why
    assert trained_on() == ["b.txt"] and (tokenizer / "tokenizer.json").read_bytes() != trained
    assert Tokenizer.from_pretrained(out / "model").get_vocab() == Tokenizer.from_pretrained(tokenizer).get_vocab()
    kept = (tokenizer / "tokenizer.json").read_bytes()
    assert start("b.txt", resume=True).train.step == 1  # (the record is no part of the tokenizer's digests)
    assert (tokenizer / "tokenizer.json").read_bytes() == kept and trained_on() == ["b.txt"]


def test_a_bart_tokenizer_left_by_a_failed_start_is_reused_only_for_the_same_positions(tmp_path, monkeypatch, caplog):
    """A BART tokenizer's model_max_length is the model's max_position_embeddings (the preset's, or the run's
    own): another one trains another tokenizer; another seq_len, which it does not depend on, reuses it."""
    from clm_helpers import corpus_text
    from plmkit.recipes.pretrain import run
    from plmkit.training import denoise
    (tmp_path / "c.txt").write_text(corpus_text())
    tokenizer = tmp_path / "run" / "tokenizer"
    monkeypatch.setattr(denoise, "build_model", lambda *args, **kwargs: 1 / 0)  # every start fails after its tokenizer

    def failing_start(positions: int, seq_len: int = 64) -> int:
        caplog.clear()
        config = build(out=str(tmp_path / "run"), model={"preset": "bart-tiny", "max_position_embeddings": positions},
                       data={"objective": "denoise", "corpus": [str(tmp_path / "c.txt")], "vocab_size": 300,
                             "seq_len": seq_len, "cache_dir": str(tmp_path / "cache")},
                       train={"max_steps": 1, "progress_bar": False})
        with caplog.at_level("INFO", logger="plmkit"), pytest.raises(ZeroDivisionError):
            run(config)
        return json.loads((tokenizer / "tokenizer_config.json").read_text())["model_max_length"]

    assert failing_start(128) == 128
    assert failing_start(256) == 256 and any("model_max_length 128 -> 256; a new one is trained" in m
                                             for m in caplog.messages)
    assert failing_start(256, seq_len=32) == 256 and any("reusing the tokenizer" in m for m in caplog.messages)


def test_a_leftover_tokenizer_is_removed_for_a_bert_run_of_other_settings_or_a_given_tokenizer(tmp_path, caplog):
    from plmkit.recipes.pretrain import retire_foreign_tokenizer, tokenizer_source
    from plmkit.training.fingerprint import fingerprint
    from plmkit.training.vocab import record_source
    (tmp_path / "c.txt").write_text("Some text.\n")
    directory = tmp_path / "run" / "tokenizer"

    def kept(**data):
        config = build(out=str(tmp_path / "run"), data={"corpus": [str(tmp_path / "c.txt")], **data})
        caplog.clear()
        retire_foreign_tokenizer(directory, config, tokenizer_source(config, fingerprint(config, {"--corpus": [
            tmp_path / "c.txt"]})))
        return directory.exists()

    def left(**data):  # what a start of these settings that failed after training its tokenizer leaves
        config = build(data={"corpus": [str(tmp_path / "c.txt")], **data})
        directory.mkdir(parents=True, exist_ok=True)
        record_source(directory, tokenizer_source(config, fingerprint(config, {"--corpus": [tmp_path / "c.txt"]})))

    left()
    assert kept() and kept(lowercase=True)  # lowercase is BERT's default
    assert kept(objective="mlm") and caplog.messages == []  # the same WordPiece tokenizer
    assert not kept(lowercase=False) and "lowercase true -> false" in caplog.messages[0]
    left()
    assert not kept(tokenizer=str(tmp_path / "tok")) and "this run uses --tokenizer" in caplog.messages[0]
    left(objective="clm")
    assert not kept() and "trained_by \"plmkit.training.clm\" -> \"plmkit.training.pretrain\"" in caplog.messages[0]
    directory.mkdir()  # one of an earlier plmkit, or put there by hand: where it came from is unknown
    assert not kept() and "nothing records the corpus and settings it was trained with" in caplog.messages[0]
