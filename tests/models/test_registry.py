"""The family registry: one entry per family, and a new family needs nothing but its module and entry."""
from dataclasses import dataclass

import pytest
import torch

from plmkit import convert
from plmkit.errors import CheckpointError, ConfigError
from plmkit.models import registry
from plmkit.models.auto import AutoModel, AutoModelForCausalLM, load_any
from plmkit.models.bert import BertConfig
from plmkit.models.gpt2 import GPT2_PRESETS, GPT2Config, GPT2LMHeadModel, GPT2Model
from plmkit.models.registry import Family, config_from_preset, families, family, family_of_preset


def test_every_family_is_consistent():
    known = families()
    assert {"bert", "gpt2", "llama", "bart", "marian", "encoder-decoder"} <= set(known)
    for model_type, f in known.items():
        assert f.model_type == model_type
        assert f.prefix == f.converter.prefix
        assert f.tasks["base"].base_prefix == "" if "base" in f.tasks else f.prefix == ""  # a composite: no body
        for task, cls in f.tasks.items():
            assert cls.config_class is f.config, (model_type, task)
            assert f.task_of(cls.__name__) == task
        for name in f.presets:
            config = config_from_preset(name)
            assert type(config) is f.config
            # special ids are family-neutral attributes of every config
            assert all(hasattr(config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id"))


@pytest.mark.parametrize("preset, field", [("bert-mini", "max_position_embeddings"), ("gpt2-tiny", "n_positions"),
                                           ("llama-tiny", "max_position_embeddings")])
def test_config_from_preset_sets_neutral_settings_through_the_family(preset, field):
    config = config_from_preset(preset, vocab_size=77, context_length=48, dropout=0.25)
    assert family_of_preset(preset).config is type(config)
    assert config.vocab_size == 77 and getattr(config, field) == 48 and config.context_length == 48
    assert config.dropout_fields and all(getattr(config, k) == 0.25 for k in config.dropout_fields)
    assert config.num_layers == family_of_preset(preset).presets[preset][config.field_names["num_layers"]]


def test_family_fields_win_over_neutral_ones_and_unknown_fields_are_named():
    config = config_from_preset("gpt2-tiny", dropout=0.1, attn_pdrop=0.0, context_length=32)
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop, config.n_positions) == (0.1, 0.1, 0.0, 32)
    with pytest.raises(ConfigError, match="'n_layers'"):
        config_from_preset("gpt2-tiny", n_layers=3)
    with pytest.raises(ConfigError, match="dropout"):
        config_from_preset("llama-tiny", dropout=1.5)


def test_unknown_presets_list_the_known_ones_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown preset 'gtp2-tiny' \(did you mean 'gpt2-tiny'\?\); "
                                          r"choose one of .*bert-mini.*llama-tiny"):
        config_from_preset("gtp2-tiny")
    with pytest.raises(ConfigError, match=r"unknown preset 'bert-huge' for bert \(did you mean 'bert-base'\?\); "
                                          r"choose one of bert-tiny, bert-mini, bert-small, bert-medium, bert-base$"):
        BertConfig.from_preset("bert-huge")
    with pytest.raises(ConfigError, match=r"'gpt2-tiny' is a gpt2 model, not bert; bert presets: bert-tiny"):
        BertConfig.from_preset("gpt2-tiny")
    with pytest.raises(ConfigError, match=r"'bert-mini' is a bert model, which has no causal-lm model; "
                                          r"causal-lm presets: gpt2-tiny"):
        family_of_preset("bert-mini", task="causal-lm")
    with pytest.raises(ConfigError, match="bert has no 'causal-lm' model"):
        family("bert").model_class("causal-lm")
    with pytest.raises(CheckpointError, match="model_type 't5' is not supported"):
        convert.to_hf("t5", {})


def test_preset_names_are_unique_across_families(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    with pytest.raises(ConfigError, match="gpt2-tiny of toy are already gpt2's"):
        registry.register(Family(ToyConfig, {"base": ToyModel}, GPT2LMHeadModel, {"gpt2-tiny": {}}))


# -- a new family: a module with its classes, and one registry entry ------------------------------
@dataclass
class ToyConfig(GPT2Config):
    model_type = "toy"


class ToyModel(GPT2Model):
    config_class = ToyConfig


class ToyForCausalLM(GPT2LMHeadModel):
    config_class = ToyConfig


def toy_family() -> Family:
    from plmkit.convert.gpt2 import CONVERTER
    return Family(ToyConfig, {"base": ToyModel, "causal-lm": ToyForCausalLM}, CONVERTER,
                  {"toy-tiny": dict(GPT2_PRESETS["gpt2-tiny"], n_layer=1)})


def test_a_registered_family_is_reached_by_presets_auto_classes_loading_and_conversion(monkeypatch, tmp_path):
    from plmkit.tokenization import Tokenizer
    from plmkit.training.clm import build_causal_lm

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    registry.register(toy_family())
    assert "toy-tiny" in registry.preset_names("causal-lm")
    tok = Tokenizer.train_bpe(["a tiny corpus for a tiny toy model"] * 4, 300, special_tokens=("<|endoftext|>",))
    model = build_causal_lm("toy-tiny", tok, seq_len=16)  # what `plmkit pretrain --objective clm` builds
    assert type(model) is ToyForCausalLM and model.config.n_positions == 16 and model.config.num_layers == 1
    model.eval().save_pretrained(tmp_path)
    assert set(convert.to_hf("toy", model.state_dict())) >= {"transformer.wte.weight", "transformer.h.0.attn.c_attn.weight"}
    loaded = load_any(tmp_path)
    assert type(loaded) is ToyForCausalLM and type(AutoModelForCausalLM.from_pretrained(tmp_path)) is ToyForCausalLM
    assert type(AutoModel.from_pretrained(tmp_path)) is ToyModel
    ids = torch.randint(0, len(tok), (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
