"""What every plmkit model shares: loading and saving Hugging Face–format model directories."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from plmkit import convert
from plmkit.errors import CheckpointError, ConfigError
from plmkit.generation import (CONFIG_DEFAULTS, OUTPUT_SETTINGS, check_generation_values, ids_outside, lm_vocab,
                               other_generation_settings, read_generation_config, without_ids_outside,
                               write_generation_config)
from plmkit.models.config import ModelConfig
from plmkit.models.io import check_model_dir, read_weights, write_weights
from plmkit.models.sentence_transformers import SentenceTransformerFiles
from plmkit.nn.decoding import inference_linears

log = logging.getLogger("plmkit")


class PreTrainedModel(nn.Module):
    """Subclasses set ``config_class``; task models keep their encoder in ``base_prefix`` (e.g. ``bert``)."""

    config_class: type[ModelConfig] = ModelConfig
    base_prefix: str = ""
    body_roots: tuple[str, ...] = ("embeddings", "layers")  # modules every checkpoint must provide
    tied_keys: tuple[str, ...] = ()  # parameters that are the same tensor as another (not loaded twice)
    optional_keys: tuple[str, ...] = ()  # buffers a checkpoint may lack: their initial value is the default
    # generate()'s defaults from generation_config.json; a generating model's is a plmkit.generation.GenerationConfig
    # (GenerationMixin's property: attributes as transformers', dict items as before)
    generation_config: dict | None = None
    generation_config_others: dict | None = None  # its settings generate does not use: written back as they were
    sentence_transformers: SentenceTransformerFiles | None = None  # carried from the directory loaded
    initialised_from_scratch: tuple[str, ...] = ()  # weights the checkpoint loaded last lacked (a new head), file names
    # what each loss of the output is a mean over: "examples" (rows), "tokens" (labels != -100), "next_tokens"
    # (labels[:, 1:] != -100) or "input_tokens" (attention_mask != 0); a training loop weights micro-batches and processes by these counts, so that
    # their losses add up to the mean over the whole batch
    loss_items: dict[str, str] = {"loss": "examples"}

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def train(self, mode: bool = True):
        """As nn.Module's; in eval mode the Linear layers take the fast CPU inference path
        (plmkit.nn.decoding.inference_linears)."""
        super().train(mode)
        inference_linears(self, not mode)
        return self

    # -- initialisation -------------------------------------------------------------------------
    def init_weights(self, std: float | None = None) -> None:
        """N(0, std) linear and embedding weights (std: the config's initializer_range by default), zero
        biases and padding rows, unit LayerNorms."""
        std = getattr(self.config, "initializer_range", 0.02) if std is None else std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters, int8 weights of a quantized model included (they are buffers, and train not)."""
        from plmkit.nn.quantized import quantized_weight_count
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values()) + (0 if trainable_only else quantized_weight_count(self))

    # -- int8 ---------------------------------------------------------------------------------------
    def direct_weights(self) -> tuple[torch.Tensor, ...]:
        """Linear weights the model reads as tensors rather than by calling their layer (an
        encoder-decoder's output projection): quantization keeps them fp32."""
        return ()

    def to_int8(self, method: str) -> list[str]:
        """Put int8 layers (plmkit.nn.quantized) in place of the Linear and Embedding layers that
        quantization covers: every plain one but those tied to another and `direct_weights`; their
        weights rounded. Returns their names."""
        from plmkit.nn.quantized import modules_to_quantize, to_int8
        names = modules_to_quantize(self, self.direct_weights())
        to_int8(self, names, method)
        return names

    def to_int8_like(self, hf_state: dict[str, torch.Tensor], method: str, source: str = "checkpoint") -> None:
        """Put empty int8 layers where a quantized checkpoint holds int8 ones (a ``weight_scale``), for it
        to load into: the checkpoint decides, not this class (a base model loads an LM's int8 checkpoint,
        whose embedding stays fp32 with the head tied to it). Refused by name where such a layer is one
        this model ties to another, or reads as a tensor."""
        from plmkit.nn.quantized import INT8_OF, modules_to_quantize, to_int8
        state = self._align_prefix(self.converter().from_hf(hf_state), self.state_dict())
        modules = dict(self.named_modules())
        names = [k[: -len(".weight_scale")] for k in state if k.endswith(".weight_scale")]
        names = [n for n in names if type(modules.get(n)) in INT8_OF]  # (other tasks' heads are not loaded)
        quantizable = set(modules_to_quantize(self, self.direct_weights()))
        fp32_only = [self._file_key(n + ".weight") for n in names if n not in quantizable]
        if fp32_only:
            raise CheckpointError(f"{source} holds {', '.join(fp32_only[:4])} as int8, but {type(self).__name__} "
                                  "ties it to another layer (or reads it as a tensor), so it must be fp32: load the "
                                  "directory as the class it was quantized as (architectures in config.json), or "
                                  "quantize the fp32 model loaded as this class")
        to_int8(self, names, method, from_weights=False)

    @property
    def cpu_only(self) -> bool:
        """Whether the model's kernels run on the CPU only (int8 layers)."""
        from plmkit.nn.quantized import INT8_OF
        return any(isinstance(m, tuple(INT8_OF.values())) for m in self.modules())

    # -- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, sentence_transformers: dict | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """config.json + model.safetensors with Hugging Face names, so transformers loads it too, and the
        sentence-transformers files the model was loaded with. ``sentence_transformers={"pooling": "mean",
        "normalize": True}`` (pooling mean/cls/max; optional max_seq_length) writes new ones instead, so that
        sentence-transformers loads the directory as that embedding model (plmkit.models.sentence_transformers).
        `state_dict` (plmkit names) is written instead of the model's own weights: the whole state a
        sharded model gathered (`training.distributed.full_state_dict`)."""
        from plmkit.nn.lora import plain_state_dict  # LoRA updates are merged: an ordinary checkpoint
        from plmkit.utils.files import output_dir, staged_writes
        directory = output_dir(directory, "save_pretrained(directory)")
        st_files = (SentenceTransformerFiles.from_options(sentence_transformers, self.config.d_model)
                    if sentence_transformers is not None else self.sentence_transformers)
        self.config.architectures = [own_class(self).__name__]  # (not FSDP's subclass of it)
        weights = self.converter().to_hf(plain_state_dict(self, state_dict))
        self.config.set_dtype(floating_dtype(weights))
        with staged_writes():  # every file, or (a full disk) none: never a new config.json over old weights
            self.config.save(directory)
            if st_files is not None:
                st_files.write(directory)
            write_weights(directory, weights)
            if self.generation_config or self.generation_config_others:
                write_generation_config(directory, {**(self.generation_config_others or {}),
                                                    **(self.generation_config or {})})

    def converter(self):
        """The Hugging Face key table of this model's checkpoints (plmkit.convert)."""
        return convert.converter(self.config.model_type)

    # -- vocabulary -----------------------------------------------------------------------------
    def check_vocabulary(self, tokenizer, where: str | Path = "the model") -> None:
        """Refuse a tokenizer whose ids go past the embedding rows, here and by name, instead of an
        IndexError in the first forward pass (a device-side assert on a GPU). Fewer tokens than rows
        is fine (vocabularies are often padded to a round size)."""
        rows = self.get_input_embeddings().num_embeddings
        if len(tokenizer) > rows:
            raise CheckpointError(f"{where}: the tokenizer has {len(tokenizer):,} tokens but the model's embedding has "
                                  f"{rows:,} rows (vocab_size in config.json): ids from {rows:,} on would index past "
                                  "it. Use the tokenizer the model was trained with")

    def check_complete(self, where: str | Path = "the model") -> None:
        """For inference: refuse a model whose checkpoint lacked weights (a task head, an untied
        lm_head), which would answer from their random initialisation."""
        missing = self.initialised_from_scratch
        if missing:
            more = " ..." if len(missing) > 6 else ""
            raise CheckpointError(f"{where}: the weights lack {', '.join(missing[:6])}{more}, so they would be random; "
                                  "use a directory that fine-tuning wrote (or train it first)")

    def get_input_embeddings(self) -> nn.Embedding:
        base = getattr(self, self.base_prefix) if self.base_prefix else self
        return base.embeddings.word

    def get_output_embeddings(self) -> nn.Linear | None:
        """The layer that scores the vocabulary (the LM head), None without one: ``lm_head`` here; a model
        whose head is another module names it (BERT's masked-LM ``mlm.decoder``)."""
        head = getattr(self, "lm_head", None)
        return head if isinstance(head, nn.Linear) else None

    def resize_token_embeddings(self, n: int) -> nn.Embedding:
        """Grow (or shrink) the token embedding matrix to `n` rows, e.g. after adding tokens to the
        tokenizer: old rows are kept, new rows drawn like the initial weights. Output layers tied to
        the embeddings (and their bias) follow, as does an untied output layer (`get_output_embeddings`,
        its new bias entries zero, as in Hugging Face); config.vocab_size is updated."""
        emb = self.get_input_embeddings()
        old = emb.weight
        if n == old.shape[0]:
            return emb
        weight = torch.empty(n, old.shape[1], device=old.device, dtype=old.dtype)
        nn.init.normal_(weight, std=getattr(self.config, "initializer_range", 0.02))
        keep = min(n, old.shape[0])
        with torch.no_grad():
            weight[:keep] = old[:keep]
        new = nn.Parameter(weight, requires_grad=old.requires_grad)
        head = self.untied_input_vocabulary_head()  # an untied vocabulary projection (decoders) grows as well
        if head is not None and head.out_features == old.shape[0]:
            rows = torch.empty(n, head.in_features, device=head.weight.device, dtype=head.weight.dtype)
            nn.init.normal_(rows, std=getattr(self.config, "initializer_range", 0.02))
            with torch.no_grad():
                rows[:keep] = head.weight[:keep]
            head.weight, head.out_features = nn.Parameter(rows, requires_grad=head.weight.requires_grad), n
            if head.bias is not None:
                bias = torch.zeros(n, device=head.bias.device, dtype=head.bias.dtype)
                bias[:keep] = head.bias.detach()[:keep]
                head.bias = nn.Parameter(bias, requires_grad=head.bias.requires_grad)
        for module in self.modules():  # tied output projections share the new tensor (and grow their bias)
            if isinstance(module, nn.Linear) and module.weight is old:
                module.weight, module.out_features = new, n
                if module.bias is not None:
                    bias = torch.zeros(n, device=old.device, dtype=old.dtype)
                    bias[:keep] = module.bias.detach()[:keep]
                    module.bias = nn.Parameter(bias, requires_grad=module.bias.requires_grad)
        emb.weight, emb.num_embeddings = new, n
        if hasattr(self.config, "vocab_size"):
            self.config.vocab_size = n
        return emb

    def untied_input_vocabulary_head(self) -> nn.Linear | None:
        """The output layer (`get_output_embeddings`) with weights of its own that scores the input embedding's
        vocabulary (an untied head), which `resize_token_embeddings` grows too; None without one. A head that is
        the weight of an embedding (another than the input's: Marian's decoder embedding) follows that one."""
        head = self.get_output_embeddings()
        if head is None:
            return None
        tied = any(head.weight is m.weight for m in self.modules() if isinstance(m, nn.Embedding))
        return None if tied else head

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, **config_overrides) -> "PreTrainedModel":
        """Load a local directory written by plmkit or Hugging Face transformers.

        ``config_overrides`` replace config fields, e.g. ``num_labels=3`` or ``id2label={...}``. As in
        transformers 5: ``dtype`` (or ``torch_dtype``: a floating torch dtype or its name) casts the model
        once loaded; "auto", the default, keeps the checkpoint's (config.json's dtype, else the weights' own;
        a quantized model stays as built). Training wants fp32 weights: pass ``dtype=torch.float32``.
        ``ignore_mismatched_sizes=True`` starts weights whose shape differs from the model's (a classifier
        head of another num_labels) from scratch, with a warning naming them, instead of an error.
        """
        directory = check_model_dir(path)
        dtype = _dtype_override(config_overrides, str(directory))
        ignore_mismatched_sizes = config_overrides.pop("ignore_mismatched_sizes", False)
        config = cls.config_class.from_json_file(directory / "config.json")
        legacy_generation = config.generation_defaults  # older checkpoints keep num_beams ... in config.json
        config = config.overridden(config_overrides, str(directory))
        model = cls(config)
        weights = read_weights(directory)
        if config.quantization_config is not None:
            from plmkit.nn.quantized import method_of
            method = method_of(config.quantization_config, directory / "config.json")
            model.to_int8_like(weights, method, str(directory))
        model.load_hf_state_dict(weights, source=str(directory), ignore_mismatched_sizes=ignore_mismatched_sizes)
        model.sentence_transformers = SentenceTransformerFiles.read(directory)
        model.generation_config = directory_generation_config(directory, config, legacy_generation)
        model.generation_config_others = _other_generation_settings(directory)
        _warn_of_ids_outside(config, model.generation_config, directory)
        if dtype == "auto" and config.quantization_config is None:  # (transformers' rule)
            dtype = getattr(torch, config.dtype) if config.dtype is not None else floating_dtype(weights)
        if isinstance(dtype, torch.dtype):
            model.to(dtype)
            config.set_dtype(dtype)
        return model.eval()

    def load_hf_state_dict(self, hf_state: dict[str, torch.Tensor], source: str = "checkpoint",
                           ignore_mismatched_sizes: bool = False) -> None:
        """Load Hugging Face–named tensors: the encoder body must match exactly; heads that the
        checkpoint lacks are initialised (and we say so), heads of other tasks are ignored. Tensors whose
        shape is not the model's are an error, or with `ignore_mismatched_sizes` left as initialised."""
        state = self.converter().from_hf(hf_state)
        expected = self.state_dict()
        state = self._align_prefix(state, expected)
        shapes = {k: (tuple(t.shape), tuple(expected[k].shape)) for k, t in state.items()
                  if k in expected and expected[k].shape != t.shape}
        mismatched = [f"{self._file_key(k)}: {ours} in the checkpoint, {theirs} in the model"
                      for k, (ours, theirs) in shapes.items()]
        if mismatched and not ignore_mismatched_sizes:
            raise CheckpointError(f"{source} does not fit {type(self).__name__} (config.json and weights disagree): "
                                  + "; ".join(mismatched[:6]) + (" ..." if len(mismatched) > 6 else "")
                                  + ". from_pretrained(..., ignore_mismatched_sizes=True) starts them from scratch "
                                    "instead (a classifier head of another num_labels ...)")
        if mismatched:
            log.warning("plmkit: some weights of %s were not initialized from the model checkpoint at %s and are newly "
                        "initialized because the shapes did not match:\n- %s\nYou should probably TRAIN this model "
                        "on a down-stream task to be able to use it for predictions and inference.",
                        type(self).__name__, source, "\n- ".join(mismatched))
            state = {k: v for k, v in state.items() if k not in shapes}
        wrong = [f"{self._file_key(k)} ({t.dtype})" for k, t in state.items()
                 if k in expected and expected[k].is_floating_point() and not t.is_floating_point()]
        broken = [self._file_key(k) for k, t in state.items()
                  if k in expected and t.is_floating_point() and not bool(torch.isfinite(t).all())]
        for keys, what in ((wrong, "holds integers where weights are numbers"), (broken, "holds NaN or inf in")):
            if keys:
                raise CheckpointError(f"{source} {what} {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}: "
                                      "the file is damaged or not a model's weights")
        missing = [k for k in expected if k not in state and k not in shapes
                   and k not in self.tied_keys + self.optional_keys]
        unexpected = [k for k in state if k not in expected]
        body_missing = [self._file_key(k) for k in missing if self._is_body(k)]
        body_unexpected = [k for k in unexpected if self._is_body(k)]
        body_unexpected += [k for k in convert.unknown_body_keys(self.config.model_type, unexpected)
                            if k not in body_unexpected]
        if body_missing or body_unexpected:
            raise CheckpointError(f"{source} does not fit {type(self).__name__}: "
                                  + "; ".join(f"{what}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                                              for what, keys in (("missing", body_missing), ("unexpected", body_unexpected)) if keys))
        state = self._one_name_per_tied_tensor(state, source)
        self.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
        self.initialised_from_scratch = tuple(self._file_key(k) for k in [*missing, *shapes])
        if missing:
            log.warning("plmkit: %s: initialised %s from scratch (not in %s); train it before use",
                     type(self).__name__, _summarise(missing), source)
        if unexpected:
            log.info("plmkit: %s: ignored %s from %s (not part of this model)",
                     type(self).__name__, _summarise(unexpected), source)

    def _one_name_per_tied_tensor(self, state: dict, source: str) -> dict:
        """`state` with one name of each tied tensor (an embedding and the output layer tied to it): the
        first the checkpoint holds in the model's order, the embedding before its head, as transformers 4.x
        ties them (loading both names, the later one would win). A later name holding other values is
        ignored, and a warning says so (transformers 5.x unties the two instead)."""
        names: dict[int, list[str]] = {}
        for name, p in self.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        state = dict(state)
        for tied in names.values():
            kept, *others = [name for name in tied if name in state] or [None]
            for name in others:
                value = state.pop(name)
                if value.shape == state[kept].shape and not torch.equal(value, state[kept]):
                    log.warning("plmkit: %s: %s holds %s with other values than %s, to which the model ties it "
                                "(tie_word_embeddings): the latter is used, the former ignored (transformers 5.x "
                                "unties the two instead)", type(self).__name__, source, self._file_key(name),
                                self._file_key(kept))
        return state

    def _file_key(self, key: str) -> str:
        """A key as the checkpoint file names it, ours in brackets when they differ."""
        theirs = self.converter().hf_key(key)
        return key if theirs == key else f"{theirs} ({key})"

    def _is_body(self, key: str) -> bool:
        """Encoder/decoder weights proper (under ``body_roots``), as opposed to heads and the pooler."""
        if self.base_prefix:
            if not key.startswith(self.base_prefix + "."):
                return False
            key = key[len(self.base_prefix) + 1:]
        return key.split(".")[0] in self.body_roots

    def _align_prefix(self, state: dict, expected: dict) -> dict:
        """Base-model checkpoints lack the task model's prefix (the body's keys get it; heads of any task
        and keys of no body keep their names); task checkpoints have one a base model lacks."""
        p = self.base_prefix + "." if self.base_prefix else ""
        if p:  # key by key: one stray prefixed key does not make the others "missing"
            roots = convert.converter(self.config.model_type).body_roots() | set(self.body_roots)
            return {(p + k if k.split(".")[0] in roots else k): v for k, v in state.items()}
        if not p:
            prefixes = {k.split(".")[0] + "." for k in state if k not in expected and "." in k}
            for prefix in prefixes:
                if any(k.startswith(prefix) and k[len(prefix):] in expected for k in state):
                    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
        return state


def directory_generation_config(directory: str | Path, config: ModelConfig, legacy: dict | None = None) -> dict | None:
    """generate()'s defaults that a model directory holds: its generation_config.json, else the decoding keys
    an older config.json keeps (`legacy`; default: what `config` read of them) with its special token ids
    (as transformers' GenerationConfig.from_model_config: saved, generation_config.json is all transformers
    reads), checked against the LM head's vocabulary (an eos or bos beyond it is kept as read: generate()
    leaves it out, `GenerationMixin.generation_defaults`); None without any."""
    vocab = lm_vocab(config)
    legacy = config.generation_defaults if legacy is None else legacy
    if legacy:
        ids = ("bos_token_id", *CONFIG_DEFAULTS)
        legacy = {**{k: getattr(config, k) for k in ids if getattr(config, k, None) is not None}, **legacy}
    found, where = read_generation_config(directory), Path(directory) / "generation_config.json"
    if not found:
        found, where = legacy, Path(directory) / "config.json"
    check_generation_values(without_ids_outside(found or {}, vocab), where, vocab)  # (those kept as read)
    return found or None


def _warn_of_ids_outside(config: ModelConfig, generation_config: dict | None, directory: Path) -> None:
    """One warning naming the special ids (eos ...) of config.json and generation_config.json beyond the
    LM head's vocabulary: tokens the model never produces, which generate() leaves out."""
    vocab = lm_vocab(config)
    fields = {name: getattr(config, name, None) for name in ("bos_token_id", "eos_token_id", "forced_eos_token_id")}
    outside = {**ids_outside(fields, vocab), **ids_outside(generation_config or {}, vocab)}
    if outside:
        one = len(outside) == 1
        log.warning("plmkit: %s: %s %s outside the %d-token vocabulary, so the model never produces %s: generate() "
                    "leaves %s out (saving keeps %s)", directory,
                    ", ".join(f"{k}={v[0] if len(v) == 1 else v}" for k, v in outside.items()),
                    "lies" if one else "lie", vocab, *(["it"] * 3 if one else ["them"] * 3))


def _other_generation_settings(directory: Path) -> dict | None:
    """generation_config.json's settings that generate does not use, for save_pretrained to write back; a
    warning names those that change which tokens transformers generates."""
    others = other_generation_settings(directory)
    ignored = sorted(set(others) - OUTPUT_SETTINGS)
    if ignored:
        log.warning("plmkit: %s: generate() ignores %s of generation_config.json (kept when the model is saved)",
                    directory, ", ".join(ignored))
    return others or None


def _dtype_override(overrides: dict, source: str):
    """The dtype (or torch_dtype) of from_pretrained's keyword arguments, removed from them: a floating
    torch dtype, or "auto" (also where none or None is given, as in transformers 5); anything else is a
    ConfigError naming it."""
    given = {k: overrides.pop(k) for k in ("torch_dtype", "dtype") if k in overrides}
    if len(given) > 1:
        raise ConfigError(f"{source}: give torch_dtype or dtype, not both (they are one setting)")
    if not given:
        return "auto"
    (name, value), = given.items()
    dtype = getattr(torch, value, None) if isinstance(value, str) and value != "auto" else value
    if value is None or value == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ConfigError(f"{source}: {name} must be a floating torch dtype (torch.bfloat16, \"float16\" ...) or "
                      f"\"auto\" (the weights' own), got {value!r}")


def floating_dtype(tensors: dict[str, torch.Tensor]) -> torch.dtype | None:
    """The dtype of the first floating tensor (no float8 one), as transformers reads a checkpoint's."""
    return next((t.dtype for t in tensors.values() if t.is_floating_point() and t.element_size() > 1), None)


def _summarise(keys: list[str]) -> str:
    """'classifier.{weight,bias}'-like short listing of parameter names."""
    modules = sorted({k.rsplit(".", 1)[0] for k in keys})
    return ", ".join(modules[:6]) + (f" and {len(modules) - 6} more" if len(modules) > 6 else "")


def own_class(model: nn.Module) -> type:
    """The model's class: a model sharded by FSDP2 is an instance of a subclass `FSDP<Name>` that
    `fully_shard` makes of it, which no checkpoint should name."""
    from torch.distributed.fsdp import FSDPModule
    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
