"""Attention maps as pictures: the explicit attention path returns the probabilities, this draws them."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from plmkit.utils.files import atomic_write


def attention_figure(tokens: list[str], attentions: tuple[torch.Tensor, ...], layers: list[int] | None = None,
                     title: str = ""):
    """A grid of head-averaged attention maps, one panel per layer (a matplotlib Figure).

    tokens: the T tokens of one sequence; attentions: per layer (1, H, T, T) or (H, T, T) probabilities.
    The figure is pyplot's own business nowhere, so threads may draw at once (a server).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = list(range(len(attentions))) if layers is None else layers
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    size = max(3.0, 0.28 * len(tokens))
    fig = Figure(figsize=(size * cols, size * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        probs = attentions[layer].detach().float().cpu().reshape(-1, len(tokens), len(tokens)).mean(0)  # (T, T)
        ax.imshow(probs.numpy(), cmap="viridis", vmin=0.0)
        ax.set_title(f"layer {layer} (mean over heads)", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
        ax.set_xlabel("attended token (key)", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def attention_png(tokens: list[str], attentions: tuple[torch.Tensor, ...], layers: list[int] | None = None,
                  title: str = "") -> bytes:
    """`attention_figure` as PNG bytes."""
    return png_bytes(attention_figure(tokens, attentions, layers, title))


def plot_attention(tokens: list[str], attentions: tuple[torch.Tensor, ...], path: str | Path,
                   layers: list[int] | None = None, title: str = "") -> Path:
    """Write `attention_figure` as a PNG at ``path``."""
    return save_png(attention_figure(tokens, attentions, layers, title), path)


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (tight layout, 110 dpi)."""
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, dpi=110, format="png")
    return out.getvalue()


def save_png(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    try:
        png = png_bytes(fig)
        atomic_write(path, lambda temp: Path(temp).write_bytes(png))
    finally:
        plt.close(fig)
    return Path(path)
