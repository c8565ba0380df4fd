"""`plmkit quantize`: a model directory with int8 Linear layers, for CPU inference.

    quantize_dir("sentiment/model", "sentiment/int8")            # dynamic-int8: int8 matmuls
    quantize_dir("gpt2-dir", "gpt2-int8", method="weight-int8")   # int8 on disk, fp32 compute

The layers, the methods and the measurements that chose the kernel: plmkit.nn.quantized. Every
plain Linear layer and embedding is quantized except those tied to another layer and those a model
reads as a tensor (an encoder-decoder's output projection); LayerNorms stay fp32. The output is
an ordinary model directory (config.json with a Hugging Face-style ``quantization_config`` block,
model.safetensors with int8 ``weight`` and fp32 ``weight_scale`` tensors, the tokenizer and task
files copied), which `from_pretrained`, `plmkit evaluate`, `predict`, `generate` and
`plmkit.pipeline` load as they load any other.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from torch import nn

from plmkit.compression.records import is_record_file
from plmkit.errors import ConfigError
from plmkit.models.io import check_model_dir, is_weight_file
from plmkit.nn.quantized import AMX_ROWS_FROM, METHOD_KEY, METHODS, QUANT_METHOD

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")  # PEFT's LoRA files
HOW = {
    "dynamic-int8": {"activations": "int8, one scale per tensor computed at run time",
                     "kernel": "quantized::linear_dynamic (x86 CPU): fbgemm's, oneDNN's for products of "
                               f"{AMX_ROWS_FROM} rows or more where the CPU has AMX"},
    "weight-int8": {"activations": "fp32", "kernel": "fp32 matmul on the weights dequantized at load"},
}


def quantize_model(model, method: str = "dynamic-int8", source: str | None = None):
    """Replace `model`'s Linear layers by int8 ones in place (see the module docstring) and record how
    in ``model.config.quantization_config``; returns the model. Unmerged LoRA layers are refused."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if model.config.quantization_config is not None:
        raise ConfigError(f"{source or 'the model'} is quantized already ({model.config.quantization_config.get('method')}); "
                          "quantize the fp32 model it was made from")
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    quantized = model.to_int8(method)
    model.config.quantization_config = {
        METHOD_KEY: QUANT_METHOD, "method": method, "bits": 8,  # (no quant_method: transformers refuses it)
        "weights": "int8, symmetric, one fp32 scale per output row (weight_scale); untied embeddings too, per row", **HOW[method],
        "quantized_layers": len(quantized),
        "modules_to_not_convert": [name for name in layers if name not in quantized],
        **({"source": str(source)} if source is not None else {}),
    }
    return model.eval()


def quantize_dir(model_dir, out_dir, method: str = "dynamic-int8", *, overwrite: bool = False) -> Path:
    """Quantize the model directory `model_dir` into `out_dir` (written whole or not at all); the
    other files of the directory (tokenizer, plmkit_task.json ...) are copied beside the weights, its
    weights in every format (pytorch_model-00001-of-00002.bin, tf_model.h5, indexes ...) and the commands'
    records of it (prune.json, compression_report.json ...: plmkit.compression.records) not.
    An `out_dir` that holds other files than an earlier quantized model is refused unless `overwrite`."""
    from plmkit.models.auto import load_any
    from plmkit.utils.files import atomic_write_dir, refuse_foreign_dir, refuse_overwriting_inputs

    source = check_model_dir(model_dir)
    adapters = [name for name in ADAPTER_FILES if (source / name).exists()]
    if adapters:
        raise ConfigError(f"{source} holds LoRA adapters that are not merged ({', '.join(adapters)}): merge them into "
                          "the weights first (load and save_pretrained the merged model), then quantize")
    refuse_overwriting_inputs(out_dir, "--out", [("--model", model_dir)])
    if not overwrite:
        refuse_foreign_dir(out_dir, f"--out {out_dir}", _quantized,
                           "give a new directory, or --overwrite to replace it and everything in it")
    model = quantize_model(load_any(source, dtype="float32"), method, source)  # int8 of fp32 (a bf16 one too)

    def write(temp: Path) -> None:
        for path in source.iterdir():  # tokenizer, task and generation files; save_pretrained writes the rest
            if path.is_file() and not is_weight_file(path.name) and not is_record_file(path.name):
                shutil.copy2(path, temp / path.name)  # (no fp32 weights of any format, no records of the source)
        model.save_pretrained(temp)

    return atomic_write_dir(out_dir, write)


def _quantized(directory: Path) -> bool:
    """Whether `directory` holds a model quantized here (config.json names a quantization_config)."""
    from plmkit.models.config import read_config_json
    try:
        return "quantization_config" in read_config_json(directory / "config.json")
    except ConfigError:
        return False


__all__ = ["quantize_dir", "quantize_model"]
