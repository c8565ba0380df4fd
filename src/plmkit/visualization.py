"""Attention maps as pictures: the explicit attention path returns the probabilities, this draws them."""
from __future__ import annotations

from pathlib import Path

import torch

from plmkit.utils.files import atomic_write


def plot_attention(tokens: list[str], attentions: tuple[torch.Tensor, ...], path: str | Path,
                   layers: list[int] | None = None, title: str = "") -> Path:
    """Write a PNG grid of head-averaged attention maps, one panel per layer.

    tokens: the T tokens of one sequence; attentions: per layer (1, H, T, T) or (H, T, T) probabilities.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(range(len(attentions))) if layers is None else layers
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    size = max(3.0, 0.28 * len(tokens))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        probs = attentions[layer].detach().float().reshape(-1, len(tokens), len(tokens)).mean(0)  # (T, T)
        ax.imshow(probs.numpy(), cmap="viridis", vmin=0.0)
        ax.set_title(f"layer {layer} (mean over heads)", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
        ax.set_xlabel("attended token (key)", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def save_png(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        atomic_write(path, lambda temp: fig.savefig(temp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return Path(path)
