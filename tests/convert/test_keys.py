"""plmkit.convert: one key's Hugging Face name, for messages; every name it gives is a real HF key."""
import pytest
import torch

from plmkit import convert
from plmkit.models.bert import BertConfig, BertForMaskedLM
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM


@pytest.mark.parametrize("model", [
    BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)),
    GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=50, n_positions=16)),
    LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=50)),
], ids=["bert", "gpt2", "llama"])
def test_hf_key_names_a_key_of_the_converted_checkpoint(model):
    ours = model.state_dict()
    theirs = convert.to_hf(model.config.model_type, {k: v.detach().clone() for k, v in ours.items()})
    for key in ours:
        assert convert.hf_key(model.config.model_type, key) in theirs, key


def test_gpt2_q_k_v_are_named_by_their_fused_c_attn():
    assert convert.hf_key("gpt2", "transformer.layers.1.attn.k.bias") == "transformer.h.1.attn.c_attn.bias"
    assert convert.hf_key("llama", "model.layers.0.mlp.fc_out.weight") == "model.layers.0.mlp.down_proj.weight"


def test_from_hf_drops_old_buffers_and_reads_tf_era_names():
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=16))
    hf = convert.to_hf("bert", {k: v.detach().clone() for k, v in model.state_dict().items()})
    assert torch.equal(hf["cls.predictions.bias"], hf["cls.predictions.decoder.bias"])  # both names, a file holds both
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in hf.items() if k != "cls.predictions.decoder.bias"}
    old["bert.embeddings.position_ids"] = torch.arange(16)[None]  # buffers old checkpoints carry
    old["bert.embeddings.token_type_ids"] = torch.zeros(1, 16, dtype=torch.long)
    ours = convert.from_hf("bert", old)
    assert ours.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ours[key], value, msg=key)


def test_a_converter_round_trips_every_family():
    for model in (GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=50, n_positions=16)),
                  LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=50))):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        back = convert.from_hf(model.config.model_type, convert.to_hf(model.config.model_type, state))
        assert back.keys() == state.keys()
        for key in state:
            torch.testing.assert_close(back[key], state[key], msg=key)
