"""The files in which the compression commands record what they did, beside the model they wrote (or the
directory --out names). Each describes one model, so none is copied into a model made from it: a quantized or
exported copy of a pruned model would carry the pruning's record and report, which describe another model (and
`plmkit prune --out` that copy would take it for an output of its own)."""
from __future__ import annotations

from plmkit.models.onnx import GRAPH_FILE

PRUNE_FILE = "prune.json"  # plmkit prune: what it removed, the importance scores, the metrics
REPORT_FILE = "compression_report.json"  # prune, quantize, distill: the model before and after, measured
COMPARE_FILES = ("compare.json", "compare.png")  # plmkit compare --out
RUN_FILES = ("run.yaml", "metrics.jsonl", "training_curves.png", "train_config.json")  # a training run's (distill,
# prune's recovery fine-tuning)
RECORD_FILES = frozenset({PRUNE_FILE, REPORT_FILE, GRAPH_FILE, *COMPARE_FILES, *RUN_FILES})  # (GRAPH_FILE: export's)


def is_record_file(name: str) -> bool:
    """Whether a file of this name is a command's record of another model, not a part of the model."""
    return name in RECORD_FILES


__all__ = ["COMPARE_FILES", "PRUNE_FILE", "RECORD_FILES", "REPORT_FILE", "RUN_FILES", "is_record_file"]
