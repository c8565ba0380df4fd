"""config.json as both Hugging Face release lines write it (4.57 and 5.x): the same plmkit config from
either, what plmkit cannot honour refused by name; config from_pretrained / save_pretrained / AutoConfig."""
import json
from pathlib import Path

import pytest

import dataclasses

from plmkit import AutoConfig, BartConfig, BertConfig, EncoderDecoderConfig, GPT2Config, LlamaConfig, MarianConfig
from plmkit.errors import CheckpointError, ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hf_configs"
LINES = ("4.57.1", "5.24.0", "5.25.0")  # transformers versions that wrote the fixtures (make_fixtures.py); 5.x last
CLASSES = {"bert": BertConfig, "gpt2": GPT2Config, "llama": LlamaConfig, "bart": BartConfig, "marian": MarianConfig,
           "marian-own-target-vocab": MarianConfig, "encoder-decoder": EncoderDecoderConfig}


def fixture(name: str, version: str) -> Path:
    return FIXTURES / f"{name}-{version}.json"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_both_release_lines_give_the_same_config(name):
    old, *new = (AutoConfig.from_pretrained(fixture(name, v)) for v in LINES)
    assert all(type(c) is CLASSES[name] for c in (old, *new))
    assert all(c == old for c in new)


def test_what_5x_writes_differently_is_read():
    new = {k: json.loads(fixture(k, LINES[-1]).read_text()) for k in CLASSES}
    old = json.loads(fixture("bart", LINES[0]).read_text())
    assert old["num_hidden_layers"] == 2 and "num_hidden_layers" not in new["bart"]  # 4.x writes the alias
    assert new["marian"]["bos_token_id"] is None
    assert "bos_token_id" not in json.loads(fixture("marian", LINES[0]).read_text())
    assert new["bert"]["bos_token_id"] is None and new["bert"]["is_decoder"] is False
    assert "rope_theta" not in new["llama"] and new["llama"]["rope_parameters"]["rope_type"] == "default"
    bert = BertConfig.from_pretrained(fixture("bert", LINES[-1]))
    llama = LlamaConfig.from_pretrained(fixture("llama", LINES[-1]))
    assert (bert.bos_token_id, bert.eos_token_id, bert.id2label) == (None, None, {0: "neg", 1: "neu", 2: "pos"})
    assert llama.rope_theta == 500000.0 and llama.rope_scaling is None  # not the 10,000 default
    assert GPT2Config.from_pretrained(fixture("gpt2", LINES[-1])).tie_word_embeddings is False


@pytest.mark.parametrize("version", LINES)
def test_rope_scaling_is_refused_by_name_in_both_formats(version):
    with pytest.raises(ConfigError, match="rope_type 'llama3' is not supported"):
        AutoConfig.from_pretrained(fixture("llama-llama3-scaling", version))


def test_the_installed_transformers_writes_what_the_fixtures_hold(tmp_path):
    pytest.importorskip("transformers")
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    for name in CLASSES:
        written = make.write(name, tmp_path)
        assert AutoConfig.from_pretrained(written) == AutoConfig.from_pretrained(fixture(name, LINES[0]))


def test_rope_parameters_that_plmkit_cannot_honour_are_refused():
    d = json.loads(fixture("llama", LINES[-1]).read_text())
    with pytest.raises(ConfigError, match="'partial_rotary_factor' not supported"):
        LlamaConfig.from_dict({**d, "rope_parameters": {"rope_theta": 1e4, "rope_type": "default",
                                                        "partial_rotary_factor": 0.5}})
    with pytest.raises(ConfigError, match="rope_theta=10000.0 and rope_parameters.rope_theta=500000.0 disagree"):
        LlamaConfig.from_dict({**d, "rope_theta": 10000.0})
    with pytest.raises(ConfigError, match="per layer type"):
        LlamaConfig.from_dict({**d, "rope_parameters": {"full_attention": {"rope_theta": 1e4, "rope_type": "default"}}})
    with pytest.raises(ConfigError, match="rope_type 'yarn'"):
        LlamaConfig.from_dict({**d, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})


@pytest.mark.parametrize("cls, key, value", [(BartConfig, "pruned_heads", {"0": [1]}),  # (BERT, GPT-2, Llama read it)
                                             (GPT2Config, "add_cross_attention", True),
                                             (BertConfig, "tie_encoder_decoder", True)])
def test_keys_whose_default_alone_is_implemented_are_refused_otherwise(cls, key, value):
    d = json.loads(fixture(cls.model_type, LINES[-1]).read_text())
    assert cls.from_dict({**d, key: None}) == cls.from_dict(d)  # null reads as the default
    with pytest.raises(ConfigError, match=f"{key}="):
        cls.from_dict({**d, key: value})


def test_a_bert_decoder_with_cross_attention_reads_and_needs_is_decoder():
    d = json.loads(fixture("bert", LINES[-1]).read_text())
    decoder = BertConfig.from_dict({**d, "is_decoder": True, "add_cross_attention": True})
    assert decoder.is_decoder and decoder.add_cross_attention
    with pytest.raises(ConfigError, match="add_cross_attention=true needs is_decoder=true"):
        BertConfig.from_dict({**d, "add_cross_attention": True})


def test_saved_llama_config_carries_rope_theta_for_4x_and_rope_parameters_for_5x(tmp_path):
    config = LlamaConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=4,
                         rope_theta=500000.0, rope_scaling={"type": "default"})
    config.save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["rope_theta"] == d["rope_parameters"]["rope_theta"] == 500000.0 and "rope_scaling" not in d
    assert AutoConfig.from_pretrained(tmp_path) == config
    config.rope_theta = 1e6  # an override after loading: no stale rope_parameters
    assert LlamaConfig.from_pretrained(tmp_path, rope_theta=1e6) == config


def test_config_from_pretrained_takes_a_directory_or_file_and_overrides(tmp_path):
    BertConfig(hidden_size=64, num_attention_heads=4).save_pretrained(tmp_path)
    assert BertConfig.from_pretrained(tmp_path).hidden_size == 64
    assert BertConfig.from_pretrained(tmp_path / "config.json", num_hidden_layers=3).num_hidden_layers == 3
    assert AutoConfig.from_pretrained(tmp_path, num_labels=5).num_labels == 5
    with pytest.raises(ConfigError, match="unknown key.*'n_layer'"):
        BertConfig.from_pretrained(tmp_path, n_layer=3)
    with pytest.raises(ConfigError, match="model_type is 'bert', expected 'gpt2'"):
        GPT2Config.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="local directories only"):
        AutoConfig.from_pretrained("bert-base-uncased")
    (tmp_path / "tokenizer-only").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        AutoConfig.from_pretrained(tmp_path / "tokenizer-only")


def test_auto_config_for_model_and_unknown_model_types(tmp_path):
    assert AutoConfig.for_model("gpt2", n_layer=3) == GPT2Config(n_layer=3)
    with pytest.raises(ConfigError, match="model_type 't5' is not supported"):
        AutoConfig.for_model("t5")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ConfigError, match="no model_type"):
        AutoConfig.from_pretrained(tmp_path)


def test_older_4x_hub_configs_read_with_their_decoding_defaults():
    """BART / Opus-MT config.json files of older releases: fairseq-era keys (ignored by Hugging Face too)
    and decoding settings, which become generate()'s defaults (hand-written in the shape of the
    published facebook/bart-large-cnn and Helsinki-NLP/opus-mt-* files, tiny sizes)."""
    bart = AutoConfig.from_pretrained(FIXTURES / "bart-legacy-4.x.json")
    assert bart == BartConfig.from_pretrained(fixture("bart", LINES[-1]), dtype=None)  # (the old file names no dtype)
    assert bart.generation_defaults == {"early_stopping": True, "forced_bos_token_id": 0, "length_penalty": 2.0,
                                        "max_length": 42, "min_length": 5, "no_repeat_ngram_size": 3, "num_beams": 4}
    marian = AutoConfig.from_pretrained(FIXTURES / "marian-legacy-4.x.json")
    assert (marian.activation_function, marian.scale_embedding, marian.bos_token_id) == ("swish", True, 0)
    assert marian.generation_defaults == {"bad_words_ids": [[98]], "max_length": 64, "num_beams": 4}
    with pytest.raises(ConfigError, match="num_hidden_layers=3 and encoder_layers=2 disagree"):
        BartConfig.from_dict({**json.loads(fixture("bart", LINES[0]).read_text()), "num_hidden_layers": 3})


def test_encoder_decoder_configs_nest_their_halves_as_every_release_line_writes_them():
    """5.x and 4.57 write the nested configs as differences from the defaults (5.x with null special ids),
    older 4.x releases whole, with every generic and generation attribute (hand-written in the shape
    of published bert2bert checkpoints)."""
    new = EncoderDecoderConfig.from_pretrained(fixture("encoder-decoder", LINES[-1]))
    assert (new.decoder_start_token_id, new.pad_token_id) == (2, 0)
    assert new.decoder.is_decoder and new.decoder.add_cross_attention and not new.encoder.is_decoder
    legacy = AutoConfig.from_pretrained(FIXTURES / "encoder-decoder-legacy-4.x.json")
    for side in ("encoder", "decoder"):
        assert dataclasses.replace(getattr(legacy, side), id2label=None, label2id=None) == getattr(new, side)
    d = json.loads(fixture("encoder-decoder", LINES[-1]).read_text())
    with pytest.raises(ConfigError, match="needs is_decoder=true and add_cross_attention=true"):
        EncoderDecoderConfig.from_dict({**d, "decoder": {**d["decoder"], "add_cross_attention": False}})
    with pytest.raises(ConfigError, match="tie_encoder_decoder=True is not supported"):
        EncoderDecoderConfig.from_dict({**d, "tie_encoder_decoder": True})
    with pytest.raises(ConfigError, match="model_type 'xlm' is not supported"):
        EncoderDecoderConfig.from_dict({**d, "encoder": {**d["encoder"], "model_type": "xlm"}})
