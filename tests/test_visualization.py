import pytest
import torch

from plmkit.errors import InputError
from plmkit.visualization import attention_figure, attention_png, plot_attention


def test_attention_png_is_written(tmp_path):
    probs = torch.softmax(torch.randn(2, 1, 4, 5, 5), -1)  # 2 layers of (1, H, T, T)
    path = plot_attention(list("abcde"), tuple(probs), tmp_path / "att.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("layers, tokens, batch, message", [
    ([], "abcd", 1, r"layers is empty; give layer indices 0 to 1, or None for all"),
    ([0, 2, -1], "abcd", 1, r"layers 2, -1: the attentions have layers 0 to 1"),
    (None, "abc", 1, r"3 tokens for attention over T=4 positions \(layer 0: \(1, 2, 4, 4\)\)"),
    (None, "abcd", 2, r"layer 0: attention of a batch of 2 sequences \(2, 2, 4, 4\); a figure draws one"),
])
def test_inputs_that_cannot_be_drawn_are_clear_errors(layers, tokens, batch, message):
    attentions = tuple(torch.softmax(torch.randn(2, batch, 2, 4, 4), -1))  # 2 layers of (B, H, T, T)
    with pytest.raises(InputError, match=message):
        attention_figure(list(tokens), attentions, layers)


def test_maps_of_one_sequence_with_or_without_the_batch_axis_are_drawn():
    attentions = tuple(torch.softmax(torch.randn(2, 2, 4, 4), -1))  # 2 layers of (H, T, T)
    assert len(attention_figure(list("abcd"), attentions, [1]).axes) == 1
    assert attention_png(list("abcd"), tuple(a[None] for a in attentions))[:4] == b"\x89PNG"
