"""Attention maps as pictures: the explicit attention path returns the probabilities, this draws them."""
from __future__ import annotations

import io
import numbers
from pathlib import Path

import torch

from plmkit.errors import InputError
from plmkit.utils.files import atomic_write


def attention_figure(tokens: list[str], attentions: tuple[torch.Tensor, ...], layers: list[int] | None = None,
                     title: str = ""):
    """A grid of head-averaged attention maps, one panel per layer (a matplotlib Figure).

    tokens: the T tokens of one sequence; attentions: per layer (1, H, T, T) or (H, T, T) probabilities;
    layers: the indices (0 to L-1) of the layers to draw (None: all). Other inputs are an InputError.
    The figure is pyplot's own business nowhere, so threads may draw at once (a server).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = _layers_to_draw(attentions, layers)
    for layer in layers:
        _check_map(tokens, attentions[layer], layer)
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


def _layers_to_draw(attentions, layers) -> list[int]:
    """`layers` (None: every layer), each checked to be a layer of `attentions`."""
    count = len(attentions)
    if count == 0:
        raise InputError("attention_figure: attentions is empty; give one (1, H, T, T) map per layer")
    if layers is None:
        return list(range(count))
    layers = list(layers)
    if not layers:
        raise InputError(f"attention_figure: layers is empty; give layer indices 0 to {count - 1}, or None for all")
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < count]
    if bad:
        raise InputError(f"attention_figure: layers {', '.join(map(repr, bad))}: the attentions have layers 0 to "
                         f"{count - 1}")
    return [int(i) for i in layers]


def _check_map(tokens: list[str], probs: torch.Tensor, layer: int) -> None:
    """Refuse a layer's map that is not of one sequence of len(tokens) tokens: (1, H, T, T) or (H, T, T)."""
    shape = tuple(probs.shape)
    if len(shape) not in (3, 4) or shape[-1] != shape[-2]:
        raise InputError(f"attention_figure: layer {layer}: attention of shape {shape}; expected (1, H, T, T) or "
                         "(H, T, T)")
    if len(shape) == 4 and shape[0] != 1:
        raise InputError(f"attention_figure: layer {layer}: attention of a batch of {shape[0]} sequences {shape}; "
                         "a figure draws one: pass attentions[layer][i:i + 1] for sequence i")
    if shape[-1] != len(tokens):
        raise InputError(f"attention_figure: {len(tokens)} tokens for attention over T={shape[-1]} positions "
                         f"(layer {layer}: {shape}); give the tokens of the sequence the maps are of")


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
