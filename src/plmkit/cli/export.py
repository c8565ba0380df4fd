"""`plmkit export --model DIR --format onnx --out DIR [--quantize int8]`: an ONNX graph checked
against PyTorch, beside the files that make the directory usable on its own."""
from __future__ import annotations

import argparse

from plmkit.cli.flags import add_settings_flags, settings_from_args
from plmkit.compression.onnx import ExportSettings


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to ONNX (checked against PyTorch; optional int8)",
        description="Writes OUT/model.onnx (inputs input_ids, attention_mask, token_type_ids when the model takes "
                    "them; outputs the logits first; dynamic batch and sequence axes; a causal LM also takes "
                    "past_key_values.N.key/value and returns present.N.key/value) beside config.json, the tokenizer "
                    "and task files; an encoder-decoder as Optimum lays it out, OUT/encoder_model.onnx (input_ids, "
                    "attention_mask -> last_hidden_state) and OUT/decoder_model.onnx (input_ids, encoder_attention_mask, "
                    "encoder_hidden_states, past_key_values.N.decoder/encoder.key/value -> logits, present). The "
                    "graphs are run by onnxruntime on other batch sizes and lengths than the export's and compared "
                    "with PyTorch; nothing is written above --tolerance. Then: plmkit predict --backend onnxruntime "
                    "--model OUT (generate, translate, summarize on an encoder-decoder), plmkit serve OUT.")
    add_settings_flags(p, ExportSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plmkit.compression.onnx import export_onnx
    s = settings_from_args(args, ExportSettings)
    info = export_onnx(s.model, s.out, quantize=s.quantize, tolerance=s.tolerance, overwrite=s.overwrite)
    check = info["check"]
    for graph in info["graphs"].values():
        named = [name for name in graph["inputs"] if not name.startswith("past_key_values.")]
        past = " + past keys/values" if len(named) < len(graph["inputs"]) else ""
        print(f"{s.out}/{graph['file']}: {info['architecture']}, opset {info['opset']}, inputs {', '.join(named)}{past}")
    print(f"checked at {len(check['shapes'])} shapes: max |onnxruntime - PyTorch| {check['max_abs_diff']:.2e} "
          f"(tolerance {check['tolerance']:g})")
    if "int8" in info:
        q = info["int8"]
        print(f"{s.out}/{', '.join(q['files'])}: argmax agreement with fp32 {100 * q['argmax_agreement']:.1f}%, "
              f"max |difference| {q['max_abs_diff']:.3g}, {q['bytes'] / 2 ** 20:.1f} MiB")
    return 0
