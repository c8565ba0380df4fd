import pytest
import torch

from plmkit.models.auto import AutoModelForCausalLM
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM


@pytest.mark.parametrize("build", [
    lambda: LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=40)),  # untied by default
    lambda: GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16,
                                                   tie_word_embeddings=False)),
])
def test_resize_grows_an_untied_lm_head_and_the_checkpoint_reloads(build, tmp_path):
    # e.g. SFT adding <|pad|> to the tokenizer of a Llama: the head must follow the embeddings
    torch.manual_seed(0)
    model = build().eval()
    old_head = model.lm_head.weight.detach().clone()
    model.resize_token_embeddings(41)
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    assert model.lm_head.weight.shape == (41, old_head.shape[1]) and torch.equal(model.lm_head.weight[:40], old_head)
    assert model(torch.tensor([[40, 1, 2]])).logits.shape == (1, 3, 41)
    model.save_pretrained(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).lm_head.weight.shape == (41, old_head.shape[1])
