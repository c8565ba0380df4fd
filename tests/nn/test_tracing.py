"""The traceable path (plmkit.nn.tracing) computes what the eager fast paths compute: padding kept
and masked instead of removed, masks built whole, one-token steps masked like any other."""
import pytest
import torch

from plmkit.models.bert import BertConfig, BertForSequenceClassification, BertForTokenClassification
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
from plmkit.nn.cache import PastKeyValues
from plmkit.nn.masks import causal_bias
from plmkit.nn.tracing import is_traceable, traceable


def test_the_switch_is_scoped_and_compiles_without_a_graph_break():
    assert not is_traceable()
    with traceable():
        assert is_traceable()
    assert not is_traceable()
    compiled = torch.compile(lambda x: x + 1 if is_traceable() else x * 2, fullgraph=True)  # (--compile training)
    assert compiled(torch.ones(2)).tolist() == [2.0, 2.0]


@pytest.mark.parametrize("t_q, t_k", [(1, 1), (4, 4), (1, 7), (3, 9), (5, 5)])
def test_causal_bias_sees_the_cached_prefix_and_earlier_tokens(t_q, t_k):
    allowed = torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=t_k - t_q)
    assert torch.equal(causal_bias(t_q, t_k, torch.float32)[0, 0] == 0, allowed)


def _bert(cls):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        id2label={0: "a", 1: "b", 2: "c"})
    return cls(config).eval()


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForTokenClassification])
def test_an_encoder_computes_padding_instead_of_removing_it_with_the_same_outputs(cls):
    model = _bert(cls)
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:], mask[2, 2:] = 0, 0
    for m in (mask, torch.ones_like(ids)):  # padded, and without padding (eager skips the mask then)
        with torch.no_grad():
            eager = model(ids, m).logits
            with traceable():
                traced = model(ids, m).logits
        real = m.bool() if eager.dim() == 3 else torch.ones(3, dtype=torch.bool)
        torch.testing.assert_close(traced[real], eager[real], atol=1e-6, rtol=0)


@pytest.mark.parametrize("build", [
    lambda: GPT2LMHeadModel(GPT2Config(vocab_size=60, n_positions=32, n_embd=32, n_layer=2, n_head=4)),
    lambda: LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)),
], ids=["gpt2", "llama"])
def test_a_decoder_step_on_given_past_equals_the_whole_sequence(build):
    """Left-padded prompts, then steps of 1 and 2 tokens on `PastKeyValues`, eager and traceable, give
    the logits of one forward pass over the whole sequence."""
    torch.manual_seed(0)
    model = build().eval()
    ids = torch.randint(0, 60, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        whole = model(ids, mask).logits
        for switch in (torch.no_grad, traceable):
            with switch():
                cache = PastKeyValues()
                parts = [model(ids[:, :5], mask[:, :5], past_key_values=cache).logits]
                parts.append(model(ids[:, 5:6], mask[:, :6], past_key_values=cache).logits)
                parts.append(model(ids[:, 6:], mask, past_key_values=cache).logits)
                assert cache.length == 8
            real = mask.bool()
            torch.testing.assert_close(torch.cat(parts, 1)[real], whole[real], atol=1e-5, rtol=0)
