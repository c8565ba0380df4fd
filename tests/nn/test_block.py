"""TransformerBlock: post-LN / pre-LN wiring and the causal property."""
import pytest
import torch
from torch import nn

from plmkit.nn import FeedForward, MultiHeadAttention, TransformerBlock, sinusoidal_table


def block(norm_first: bool) -> TransformerBlock:
    return TransformerBlock(MultiHeadAttention(32, 4), FeedForward(32, 64, "relu"), lambda: nn.LayerNorm(32),
                            norm_first=norm_first).eval()


@pytest.mark.parametrize("norm_first", [False, True])
def test_later_tokens_never_change_earlier_outputs_under_a_causal_mask(norm_first):
    layer = block(norm_first)
    x = torch.randn(1, 6, 32)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, 2, 32)
    y1 = layer(x, causal=True)[0]
    y2 = layer(changed, causal=True)[0]
    torch.testing.assert_close(y1[:, :4], y2[:, :4])
    assert not torch.allclose(y1[:, 4:], y2[:, 4:])
    y3 = layer(changed)[0]  # without the mask, every position sees the change
    assert not torch.allclose(y1[:, :4], y3[:, :4])


def test_post_and_pre_ln_wiring():
    post, pre = block(False), block(True)
    pre.load_state_dict(post.state_dict())
    x = torch.randn(2, 3, 32)
    attn, _ = post.attn(x)
    h = post.attn_norm(x + attn)
    torch.testing.assert_close(post(x)[0], post.mlp_norm(h + post.mlp(h)))
    attn, _ = pre.attn(pre.attn_norm(x))
    h = x + attn
    torch.testing.assert_close(pre(x)[0], h + pre.mlp(pre.mlp_norm(h)))


def test_sinusoidal_table_layouts():
    table = sinusoidal_table(10, 8)
    assert table.shape == (10, 8)
    torch.testing.assert_close(table[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin(0) | cos(0)
    swapped = sinusoidal_table(10, 8, sin_first=False)
    torch.testing.assert_close(swapped[:, :4], table[:, 4:])
