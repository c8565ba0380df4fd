"""Model configurations: dataclasses with Hugging Face's config.json field names, validated on load."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from plmkit.errors import ConfigError
from plmkit.utils.constants import GENERATION_KEYS
from plmkit.utils.settings import check_field_types, is_int, out_of_range
from plmkit.utils.text import read_json_object

# ranges of `ModelConfig.ranges`
POSITIVE = {"at_least": 1}
PROBABILITY = {"at_least": 0, "below": 1}
ABOVE_ZERO = {"above": 0}

# Keys Hugging Face writes into every config.json that say nothing about the architecture.
IGNORED_HF_KEYS = frozenset({
    "transformers_version", "_name_or_path", "gradient_checkpointing", "use_cache",
    "output_attentions", "output_hidden_states", "return_dict", "torchscript", "chunk_size_feed_forward",
    "pruned_heads", "is_decoder", "add_cross_attention", "tokenizer_class", "finetuning_task", "prefix",
    "task_specific_params", "_attn_implementation_autoset", "directionality", "is_encoder_decoder",
    "sep_token_id", "decoder_start_token_id", "num_labels",
    # what older 4.x releases wrote into every config.json (nested ones too): generation settings plmkit
    # does not implement (their defaults) and TensorFlow / export switches
    "bad_words_ids", "begin_suppress_tokens", "cross_attention_hidden_size", "diversity_penalty",
    "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "num_beam_groups", "output_scores",
    "remove_invalid_values", "return_dict_in_generate", "suppress_tokens", "tf_legacy_loss", "typical_p",
    "tie_encoder_decoder",
    "use_bfloat16", "_commit_hash",
})


# what to do instead of passing one of IGNORED_HF_KEYS to from_pretrained (the others: leave it out)
OVERRIDE_ADVICE = {
    "output_hidden_states": "ask the forward call for them: model(..., output_hidden_states=True)",
    "output_attentions": "ask the forward call for them: model(..., output_attentions=True)",
    "return_dict": "plmkit models always return an output object (out.logits, out.last_hidden_state ...)",
    "use_cache": "generate() always decodes with a KV cache, and a forward call uses one only when given "
                 "past_key_values",
    "gradient_checkpointing": "plmkit does not implement gradient checkpointing; lower the batch size "
                              "(with --grad-accum-steps) to save memory",
    "torchscript": "plmkit models are not traced; torch.compile(model) works on them",
}


@dataclass
class ModelConfig:
    """Fields every model shares: label names and the task head's problem type."""

    model_type: ClassVar[str] = ""
    dropout_fields: ClassVar[tuple[str, ...]] = ()  # the body's dropout rates (fine-tuning's --dropout sets them)
    # Family-neutral names -> this family's Hugging Face field (read through the properties below,
    # so no code outside models/ needs to know e.g. GPT-2's `n_layer` from BERT's `num_hidden_layers`).
    field_names: ClassVar[dict[str, str]] = {}
    learned_positions: ClassVar[bool] = True  # False (rotary): context_length is a trained length, not a limit
    # Hugging Face keys whose default is the only behaviour plmkit implements: another value is refused by name.
    default_only_keys: ClassVar[dict[str, Any]] = {"add_cross_attention": False, "is_encoder_decoder": False,
                                                   "pruned_heads": {}, "tie_encoder_decoder": False}
    # field -> its range ({"at_least": 1}, POSITIVE, PROBABILITY ...): checked on load, after every field's type
    ranges: ClassVar[dict[str, dict[str, float]]] = {}
    # generate()'s defaults that older checkpoints keep in config.json (num_beams ...), set by from_dict
    generation_defaults: ClassVar[dict[str, Any]] = {}
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None  # regression | single_label_classification | multi_label_classification
    architectures: list[str] | None = None
    # how the weights were quantized (plmkit quantize; Hugging Face's key): from_pretrained builds int8 layers
    quantization_config: dict[str, Any] | None = None
    # the weights' dtype ("float32", "bfloat16" ...): transformers 5's key (4.x's `torch_dtype` is read as it);
    # from_pretrained's dtype="auto" loads it, save_pretrained writes the model's
    dtype: str | None = None

    def __post_init__(self):
        """Every field's type (``num_hidden_layers: true`` or ``layer_norm_eps: "a"`` is an error naming
        it, not a failure at the first forward pass) and range; a family adds its own checks after."""
        if self.dtype is not None and not isinstance(self.dtype, str):  # a torch.dtype, as transformers holds it
            self.set_dtype(self.dtype)
        check_field_types(self, type(self).__name__)
        if self.dtype is not None:
            import torch
            self._check(getattr(getattr(torch, self.dtype, None), "is_floating_point", False) is True,
                        f"dtype must name a floating torch dtype (float32, bfloat16 ...), got {self.dtype!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in SPECIAL_IDS:  # a family's default (GPT-2's 50256) outside a smaller vocabulary: no such token
            value = getattr(self, name, None)
            if isinstance(value, int) and value == defaults.get(name) and not value < getattr(self, "vocab_size", value + 1):
                setattr(self, name, None)
        for name, bounds in self.ranges.items():
            problem = out_of_range(getattr(self, name), bounds)
            self._check(problem is None, f"{name} must be {problem}, got {getattr(self, name)!r}")
        given = None if self.label2id is None else _labels(self.label2id, "label2id", key=str, value=int,
                                                           check=self._check)
        if self.id2label is not None:
            self.id2label = _labels(self.id2label, "id2label", key=int, value=str, check=self._check)
            self.label2id = {v: k for k, v in self.id2label.items()}
        elif given is not None:
            self.id2label = {v: k for k, v in given.items()}
            self.label2id = given
        if self.label2id is not None:
            self._check(len(self.label2id) == len(self.id2label),
                        f"id2label names a class twice: {sorted(self.id2label.items())}")
            self._check(sorted(self.id2label) == list(range(len(self.id2label))),
                        f"the class ids of id2label must be 0 .. {len(self.id2label) - 1}, got {sorted(self.id2label)}")
            self._check(given is None or given == self.label2id,
                        f"label2id {given} contradicts id2label {self.id2label} (which reads as label2id "
                        f"{self.label2id}): make them agree, or drop label2id")
        problems = (None, "regression", "single_label_classification", "multi_label_classification")
        if self.problem_type not in problems:
            raise ConfigError(f"problem_type={self.problem_type!r} is not one of {problems[1:]}")

    def _neutral(self, name: str):
        return getattr(self, self.field_names[name]) if name in self.field_names else None

    @property
    def num_layers(self) -> int:
        """Transformer blocks of the body."""
        return self._neutral("num_layers") or 0

    @property
    def d_model(self) -> int | None:
        """Width of the hidden states."""
        return self._neutral("d_model")

    @property
    def context_length(self) -> int | None:
        """Positions the model was built (learned positions) or trained (rotary) for."""
        return self._neutral("context_length")

    @property
    def max_positions(self) -> int | None:
        """The hard limit on positions: context_length for learned positions, None for rotary ones."""
        return self.context_length if self.learned_positions else None

    def with_layers(self, kept: list[int], decoder_kept: list[int] | None = None) -> "ModelConfig":
        """A copy with only the blocks `kept` (their indices, in order): a student started from some of a
        teacher's layers. A family with per-layer fields (a pruned BERT) keeps those of `kept`; an
        encoder-decoder keeps the encoder's blocks `kept` and the decoder's `decoder_kept`."""
        self._check_one_stack(decoder_kept)
        return dataclasses.replace(self, **{self.field_names["num_layers"]: len(kept)})

    def _check_one_stack(self, decoder_kept: list[int] | None) -> None:
        """`with_layers` of a model with one stack of blocks: no decoder's blocks to keep."""
        if decoder_kept is not None:
            raise ConfigError(f"{type(self).__name__}: a {self.model_type} model has one stack of blocks, not an "
                              "encoder and a decoder: give its kept blocks alone")

    def _decoder_blocks(self, decoder_kept: list[int] | None) -> list[int]:
        """`with_layers` of an encoder-decoder: the decoder's kept blocks, which must be given (the two
        stacks are mapped apart: their block counts may differ)."""
        if decoder_kept is None:
            raise ConfigError(f"{type(self).__name__}: an encoder-decoder keeps blocks of its encoder and of its "
                              "decoder: give the decoder's kept blocks too (with_layers(kept, decoder_kept))")
        return decoder_kept

    def narrowed(self, d_model: int, heads: int, ffn_size: int) -> "ModelConfig":
        """A copy `d_model` wide whose blocks have `heads` attention heads of this model's head size and
        feed-forward layers `ffn_size` wide: a student selected from a wider teacher's weights
        (plmkit.compression.width, which checks the sizes against the teacher's)."""
        raise ConfigError(f"{type(self).__name__}: plmkit cannot narrow {self.model_type} models into a student of "
                          "another width (BERT encoders can)")

    # structured pruning (plmkit.compression.prune): `PrunableConfig` implements these
    def removed_heads(self) -> dict[int, list[int]]:
        """Attention heads pruned away so far: layer -> their numbers in the unpruned model."""
        return {}

    def pruned(self, removed_heads: dict[int, list[int]], ffn_sizes: list[int]) -> "ModelConfig":
        """A copy describing blocks with `removed_heads` gone (layer -> original head numbers, all of them
        so far) and feed-forward widths `ffn_sizes` (one per layer); from_pretrained rebuilds them."""
        raise ConfigError(f"{type(self).__name__}: plmkit cannot prune {self.model_type} models (BERT, GPT-2 and "
                          "Llama can be pruned; encoder-decoders cannot)")

    @classmethod
    def tokenizer_fields(cls, tokenizer) -> dict[str, Any]:
        """The fields a fresh model takes from its tokenizer: the vocabulary size and the special ids
        the config has (a family adds those it derives: an encoder-decoder's decoder start)."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields: dict[str, Any] = {"vocab_size": len(tokenizer)} if "vocab_size" in names else {}
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if name in names:
                fields[name] = getattr(tokenizer, name, None)
        return fields

    def dropout_overrides(self, p: float) -> dict[str, float]:
        """Config overrides that set every dropout rate of the body to `p`."""
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {p}")
        return dict.fromkeys(self.dropout_fields, p)

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def row_labels(self) -> list[str]:
        """The label of each output row of a classifier, in order (LABEL_i where id2label names none)."""
        names = self.id2label or {}
        return [names.get(i, f"LABEL_{i}") for i in range(self.num_labels)]

    def with_labels(self, labels: list[str] | int) -> "ModelConfig":
        """A copy with label names (or N generic ones: LABEL_0 ...)."""
        names = [f"LABEL_{i}" for i in range(labels)] if isinstance(labels, int) else list(labels)
        return dataclasses.replace(self, id2label=dict(enumerate(names)), label2id=None)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "ModelConfig":
        d = cls.from_hf_fields(dict(d), source)
        torch_dtype = d.pop("torch_dtype", None)  # transformers 4.x's name of dtype (which wins where both are)
        if d.get("dtype") is None and torch_dtype is not None:
            d["dtype"] = torch_dtype
        model_type = d.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected {cls.model_type!r}")
        num_labels = d.get("num_labels")
        names = {f.name for f in dataclasses.fields(cls)}
        for key, default in cls.default_only_keys.items():
            if key not in names and d.get(key, default) not in (default, None):  # a field: the family reads it
                raise ConfigError(f"{source}: {key}={d[key]!r} is not supported by plmkit's {cls.__name__} "
                                  f"(only {json.dumps(default)})")
        generation = {k: d.pop(k) for k in list(d) if k in GENERATION_KEYS and k not in names}
        generation = {k: v for k, v in generation.items() if v is not None}
        unknown = sorted(k for k in d if k not in names and k not in IGNORED_HF_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
                              f"known keys: {', '.join(sorted(names))}")
        try:
            config = cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ConfigError) as err:
            raise ConfigError(f"{source}: {err}") from None
        vocab = getattr(config, "vocab_size", None)
        for name in SPECIAL_IDS:  # as given (a family's defaults, GPT-2's 50256 say, may wait for a tokenizer)
            ids = d.get(name)
            for i in ids if isinstance(ids, list) else [] if ids is None else [ids]:
                if vocab is not None and not 0 <= i < vocab and name in FED_IDS:
                    raise ConfigError(f"{source}: {name}={ids} is not a token id of the {vocab}-token vocabulary")
            if ids is not None and name in names and getattr(config, name) is None:
                setattr(config, name, ids)  # beyond the vocabulary: kept as read (never generated: plmkit.generation.PRODUCED_IDS)
        if num_labels is not None:
            if not (isinstance(num_labels, int) and not isinstance(num_labels, bool) and num_labels >= 1):
                raise ConfigError(f"{source}: num_labels must be a positive integer, got {num_labels!r}")
            if config.id2label is None:
                config = config.with_labels(num_labels)
            elif len(config.id2label) != num_labels:
                raise ConfigError(f"{source}: num_labels is {num_labels} but id2label names {len(config.id2label)} "
                                  "classes")
        if generation:
            config.generation_defaults = generation
        return config

    @classmethod
    def from_hf_fields(cls, d: dict[str, Any], source: str) -> dict[str, Any]:
        """config.json as read -> this family's fields: translates what Hugging Face writes differently
        across its release lines (a family overrides this; the base changes nothing)."""
        return d

    def hf_fields(self) -> dict[str, Any]:
        """Fields written to config.json beside ours so that every Hugging Face release line reads them."""
        return {}

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> "ModelConfig":
        """The config of a model directory (or a config.json file), as transformers' `from_pretrained`:
        ``overrides`` replace fields, e.g. ``BertConfig.from_pretrained(dir, num_labels=3)``."""
        return cls.from_json_file(config_json_path(path)).overridden(overrides, str(path))

    def overridden(self, overrides: dict[str, Any], source: str) -> "ModelConfig":
        """This config with fields replaced by keyword arguments (from_pretrained's, checked as config.json
        is). A key that config.json may hold but plmkit ignores (output_hidden_states ...) is refused by
        name with what to do instead, not dropped; id2label (or label2id) given alone replaces both."""
        if not overrides:
            return self
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in overrides.items():
            if key in IGNORED_HF_KEYS and key not in names and key != "num_labels":
                raise ConfigError(f"{source}: {key}={value!r} is not a setting of plmkit's {type(self).__name__}: "
                                  f"{OVERRIDE_ADVICE.get(key, 'leave it out')}")
        values = self.to_dict()
        for a, b in (("id2label", "label2id"), ("label2id", "id2label")):
            if overrides.get(a) is not None and b not in overrides:
                values.pop(b, None)
        n = overrides.get("num_labels")
        if n is not None and n != self.num_labels and not {"id2label", "label2id"} & set(overrides):
            values.pop("id2label", None)  # another number of labels alone: LABEL_0 ... (as transformers)
            values.pop("label2id", None)
        return type(self).from_dict({**values, **overrides}, source=source)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(read_config_json(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        d = {"model_type": self.model_type, **dataclasses.asdict(self)}
        return {k: v for k, v in d.items() if v is not None}

    def to_json_string(self) -> str:
        """config.json's text: our fields plus `hf_fields()` (what transformers 4.x and 5.x each read); dtype
        also as `torch_dtype`, the key of 4.x releases before 4.56."""
        legacy = {"torch_dtype": self.dtype} if self.dtype is not None else {}
        return json.dumps({**self.hf_fields(), **legacy, **self.to_dict()}, indent=2, sort_keys=True) + "\n"

    def set_dtype(self, dtype) -> None:
        """`dtype` (a torch.dtype or its name, or None) here and in the configs nested in this one (an
        encoder-decoder's halves), as transformers sets it on loading and saving."""
        self.dtype = None if dtype is None else str(dtype).removeprefix("torch.")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ModelConfig):
                value.set_dtype(dtype)

    def save(self, directory: str | Path) -> None:
        from plmkit.utils.files import atomic_write_text
        atomic_write_text(Path(directory) / "config.json", self.to_json_string())

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``directory/config.json`` (transformers' name for `save`)."""
        self.save(directory)

    def _check(self, condition: bool, message: str) -> None:
        if not condition:
            raise ConfigError(f"{type(self).__name__}: {message}")


@dataclass
class PrunableConfig(ModelConfig):
    """The config of a family whose blocks plmkit prune shrinks (BERT, GPT-2, Llama): it records what
    went, and the family builds block i with `heads_in_layer(i)` query heads, `kv_heads_in_layer(i)`
    key/value heads and a feed-forward layer `ffn_size_of(i)` wide, so that from_pretrained rebuilds
    the pruned shapes. The family names its head count "num_heads", its feed-forward width "ffn_size"
    and, with grouped-query attention, its key/value heads "num_kv_heads" in `field_names`, and calls
    `_check_pruning` at the end of its ``__post_init__``.

    With grouped-query attention a layer loses whole groups: the query heads that share a key/value
    head go with it (a group of fewer heads than the others would break the even grouping that
    attention computes with), and pruned_heads lists those query heads."""

    # Hugging Face 4.x's field: layer -> the query heads removed, by their numbers in the unpruned model
    pruned_heads: dict[int, list[int]] | None = None
    # plmkit's: the feed-forward width of each layer (None: the config's width in every layer)
    intermediate_sizes: list[int] | None = None

    def _check_pruning(self) -> None:
        """pruned_heads as {layer: sorted head numbers} (JSON writes the layers as strings), each layer
        keeping a head and losing whole key/value groups; intermediate_sizes one positive width per
        layer; empty ones as None."""
        n, heads, group = self.num_layers, self._neutral("num_heads"), self.group_size
        if self.pruned_heads:
            self._check(isinstance(self.pruned_heads, dict), f"pruned_heads must map layers to lists of heads, got "
                                                             f"{self.pruned_heads!r}")
            removed = {}
            for layer, gone in self.pruned_heads.items():
                ok = str(layer).isdigit() and int(layer) < n and isinstance(gone, list) and all(
                    is_int(h) and 0 <= h < heads for h in gone) and len(set(gone)) == len(gone) < heads
                self._check(ok, f"pruned_heads[{layer!r}]={gone!r}: give a layer below {n} and distinct head numbers "
                                f"below {heads}, keeping at least one head")
                groups = {h // group for h in gone}
                self._check(len(gone) == group * len(groups), f"pruned_heads[{layer!r}]={gone!r}: with grouped-query "
                            f"attention whole groups of {group} query heads go (those sharing a key/value head)")
                if gone:
                    removed[int(layer)] = sorted(gone)
            self.pruned_heads = removed
        self.pruned_heads = self.pruned_heads or None
        if self.intermediate_sizes is not None:
            self._check(isinstance(self.intermediate_sizes, list) and len(self.intermediate_sizes) == n
                        and all(is_int(w) and w >= 1 for w in self.intermediate_sizes),
                        f"intermediate_sizes must give one positive width for each of the {n} layers, got "
                        f"{self.intermediate_sizes}")

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        heads = self._neutral("num_heads")
        return heads // (self._neutral("num_kv_heads") or heads)

    def heads_in_layer(self, i: int) -> int:
        return self._neutral("num_heads") - len((self.pruned_heads or {}).get(i, ()))

    def kv_heads_in_layer(self, i: int) -> int:
        return self.heads_in_layer(i) // self.group_size

    def ffn_size_of(self, i: int) -> int:
        return self.intermediate_sizes[i] if self.intermediate_sizes else self._neutral("ffn_size")

    def removed_heads(self) -> dict[int, list[int]]:
        return {layer: list(gone) for layer, gone in (self.pruned_heads or {}).items()}

    def pruned(self, removed_heads: dict[int, list[int]], ffn_sizes: list[int]) -> "PrunableConfig":
        uniform = all(w == self._neutral("ffn_size") for w in ffn_sizes)
        return dataclasses.replace(self, pruned_heads={k: sorted(v) for k, v in removed_heads.items() if v} or None,
                                   intermediate_sizes=None if uniform else list(ffn_sizes))

    def with_layers(self, kept: list[int], decoder_kept: list[int] | None = None) -> "PrunableConfig":
        self._check_one_stack(decoder_kept)
        heads = self.pruned_heads or {}
        return dataclasses.replace(
            self, **{self.field_names["num_layers"]: len(kept)},
            pruned_heads={i: heads[k] for i, k in enumerate(kept) if k in heads} or None,
            intermediate_sizes=[self.intermediate_sizes[k] for k in kept] if self.intermediate_sizes else None)


SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "sep_token_id")
FED_IDS = ("pad_token_id", "decoder_start_token_id")  # tokens plmkit feeds the model: refused beyond the vocabulary


def _labels(mapping: Any, name: str, key: type, value: type, check) -> dict:
    """id2label / label2id as ints and strings ("0": "neg" as JSON writes it), or a ConfigError naming it."""
    check(isinstance(mapping, dict), f"{name} must be a mapping, got {type(mapping).__name__}")
    out = {}
    for k, v in mapping.items():
        try:
            k2 = key(k) if key is str else int(k)
            ok = isinstance(v, str) if value is str else isinstance(v, int) and not isinstance(v, bool)
        except (TypeError, ValueError):
            ok = False
        check(ok, f"{name} maps {'class ids to names' if key is int else 'names to class ids'}; "
                  f"got {k!r}: {v!r}")
        out[k2] = v
    return out


def config_json_path(path: str | Path) -> Path:
    """A model directory's config.json, or the config file itself."""
    from plmkit.models.io import check_model_dir
    path = Path(path).expanduser()
    return path if path.is_file() else check_model_dir(path) / "config.json"  # a hub id: says how to get a dir


def read_config_json(path: str | Path) -> dict[str, Any]:
    """The JSON object of a config.json file, or an error that says what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no config.json; a model directory needs config.json + model.safetensors")
    return read_json_object(path, ConfigError)


def preset_names(presets: dict) -> str:
    return ", ".join(sorted(presets))


__all__ = ["ABOVE_ZERO", "IGNORED_HF_KEYS", "ModelConfig", "POSITIVE", "PROBABILITY", "PrunableConfig",
           "config_json_path", "field", "read_config_json"]
