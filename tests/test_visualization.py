import torch

from plmkit.visualization import plot_attention


def test_attention_png_is_written(tmp_path):
    probs = torch.softmax(torch.randn(2, 1, 4, 5, 5), -1)  # 2 layers of (1, H, T, T)
    path = plot_attention(list("abcde"), tuple(probs), tmp_path / "att.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
