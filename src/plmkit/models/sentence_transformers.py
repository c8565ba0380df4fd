"""sentence-transformers interchange: the module files that make a model directory an embedding model.

A directory saved by sentence-transformers holds, beside config.json and the weights, ``modules.json``
(the pipeline: Transformer -> Pooling -> Normalize ...), ``sentence_bert_config.json``,
``config_sentence_transformers.json`` and one folder per later module (``1_Pooling/config.json``, ...).
plmkit carries those files on the model (``model.sentence_transformers``) from `from_pretrained` to
`save_pretrained`, so a re-saved directory embeds as the original did; and it writes them for an encoder
saved as an embedding model:

    model.save_pretrained(out, sentence_transformers={"pooling": "mean", "normalize": True})
    SentenceTransformer(out)              # mean pooling, L2-normalised, like plmkit's own:
    sentence_embeddings(model(**batch).last_hidden_state, batch["attention_mask"], "mean", normalize=True)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
import torch.nn.functional as F
from torch import Tensor

from plmkit.errors import ConfigError
from plmkit.utils.text import parse_json

POOLING_MODES = ("mean", "cls", "max")
MODULES_FILE = "modules.json"
TOP_LEVEL_FILES = (MODULES_FILE, "config_sentence_transformers.json")  # plus sentence_*_config.json
# sentence-transformers' class paths (read by its 2.x to 6.x releases)
TRANSFORMER, POOLING, NORMALIZE = (f"sentence_transformers.models.{n}" for n in ("Transformer", "Pooling", "Normalize"))
# Pooling/config.json: the older per-mode flags (a newer release writes "pooling_mode": "<mode>")
LEGACY_POOLING_FLAGS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
                        "mean": "pooling_mode_mean_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                        "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
OPTIONS = ("pooling", "normalize", "max_seq_length")


def sentence_embeddings(hidden: Tensor, attention_mask: Tensor | None = None, pooling: str = "mean",
                        normalize: bool = False) -> Tensor:
    """Pool token states (B, T, D) over real tokens (attention_mask 1) into (B, D), as sentence-transformers'
    Pooling does: mean of real tokens, the first real token (cls) or the element-wise max; then L2-normalise."""
    _check_pooling(pooling)
    mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device) if attention_mask is None else attention_mask
    real = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if pooling == "mean":
        out = (hidden * real).sum(1) / real.sum(1).clamp_min(1e-9)
    elif pooling == "cls":
        first = mask.to(torch.int).argmax(1)  # (B,) the first real token (left padding too)
        out = hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    else:
        out = hidden.masked_fill(real == 0, float("-inf")).max(1).values
    return F.normalize(out, p=2, dim=-1) if normalize else out


@dataclass
class SentenceTransformerFiles:
    """The sentence-transformers files of a model directory, by relative path, kept verbatim."""

    files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: str | Path) -> "SentenceTransformerFiles | None":
        """The files of ``directory`` (None when it has no modules.json): modules.json, the top-level
        sentence-transformers configs and every file of each module folder that modules.json names."""
        directory = Path(directory)
        modules_path = directory / MODULES_FILE
        if not modules_path.is_file():
            return None
        paths = [p for p in directory.iterdir() if p.is_file() and (p.name in TOP_LEVEL_FILES or _is_sentence_config(p.name))]
        for module in _modules(modules_path.read_text(encoding="utf-8"), str(modules_path)):
            folder = _module_folder(module, modules_path)
            if folder and (directory / folder).is_dir():
                paths += sorted(p for p in (directory / folder).rglob("*") if p.is_file())
        return cls({p.relative_to(directory).as_posix(): p.read_bytes() for p in paths})

    @classmethod
    def build(cls, hidden_size: int, pooling: str = "mean", normalize: bool = False,
              max_seq_length: int | None = None) -> "SentenceTransformerFiles":
        """Files for Transformer -> Pooling(``pooling``) [-> Normalize] over an encoder of width ``hidden_size``."""
        _check_pooling(pooling, "sentence_transformers: ")
        modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE})
        pooling_config = {"word_embedding_dimension": hidden_size,
                          **{flag: mode == pooling for mode, flag in LEGACY_POOLING_FLAGS.items()}}
        transformer_config = {"do_lower_case": False, **({"max_seq_length": max_seq_length} if max_seq_length else {})}
        from plmkit import __version__
        files = {MODULES_FILE: modules, "sentence_bert_config.json": transformer_config,
                 "config_sentence_transformers.json": {"__version__": {"plmkit": __version__}, "prompts": {},
                                                       "default_prompt_name": None, "similarity_fn_name": "cosine"},
                 "1_Pooling/config.json": pooling_config}
        return cls({path: (json.dumps(value, indent=2) + "\n").encode() for path, value in files.items()})

    @classmethod
    def from_options(cls, options: dict, hidden_size: int) -> "SentenceTransformerFiles":
        """`build` from save_pretrained's ``sentence_transformers={...}`` (keys: pooling, normalize, max_seq_length)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"sentence_transformers: unknown option(s) {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(OPTIONS)}")
        return cls.build(hidden_size, **options)

    def write(self, directory: str | Path) -> None:
        from plmkit.utils.files import atomic_write
        for relative, data in self.files.items():
            atomic_write(Path(directory) / relative, lambda tmp, data=data: Path(tmp).write_bytes(data))

    @property
    def pooling(self) -> str | None:
        """The Pooling module's mode (None without one), e.g. 'mean'."""
        config = self._module_config(POOLING.rsplit(".", 1)[1])
        if config is None:
            return None
        if "pooling_mode" in config:  # newer releases: a mode, or a list of modes concatenated
            mode = config["pooling_mode"]
            return mode if isinstance(mode, str) else "+".join(mode)
        modes = [mode for mode, flag in LEGACY_POOLING_FLAGS.items() if config.get(flag)]
        return modes[0] if len(modes) == 1 else "+".join(modes) or "mean"

    @property
    def normalize(self) -> bool:
        """Whether a Normalize module follows (embeddings L2-normalised)."""
        return any(m.get("type", "").endswith("Normalize") for m in self.modules)

    @property
    def max_seq_length(self) -> int | None:
        """sentence_bert_config.json's ``max_seq_length`` (None: not said): sentence-transformers cuts inputs there."""
        for name, data in self.files.items():
            if "/" not in name and _is_sentence_config(name):
                value = parse_json(data.decode("utf-8", "replace"), name, ConfigError)
                limit = value.get("max_seq_length") if isinstance(value, dict) else None
                return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
        return None

    @property
    def modules(self) -> list[dict]:
        return _modules(self.files[MODULES_FILE].decode("utf-8"), MODULES_FILE)

    def _module_config(self, kind: str) -> dict | None:
        for module in self.modules:
            if module.get("type", "").rsplit(".", 1)[-1] == kind:
                name = f"{module['path']}/config.json"
                return parse_json(self.files.get(name, b"{}").decode("utf-8", "replace"), name, ConfigError)
        return None


def _check_pooling(pooling: str, where: str = "") -> None:
    if pooling not in POOLING_MODES:
        raise ConfigError(f"{where}pooling={pooling!r} is not one of {', '.join(POOLING_MODES)}")


def _is_sentence_config(name: str) -> bool:
    return name.startswith("sentence_") and name.endswith("_config.json")  # sentence_bert_config.json, ...


def _modules(text: str, source: str) -> list[dict]:
    modules = parse_json(text, source, ConfigError)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ConfigError(f"{source}: modules.json must hold a list of objects (idx, name, path, type)")
    return modules


def _module_folder(module: dict, source: Path) -> str:
    """A module's folder inside the model directory ('' for the Transformer itself)."""
    folder = PurePosixPath(str(module.get("path", "")))
    if folder.is_absolute() or ".." in folder.parts:
        raise ConfigError(f"{source}: module path {str(folder)!r} leaves the model directory")
    return "" if str(folder) == "." else str(folder)


__all__ = ["POOLING_MODES", "SentenceTransformerFiles", "sentence_embeddings"]
