"""Structured pruning of a fine-tuned model directory: ``plmkit prune``.

    from plmkit.recipes.prune import prune_dir
    result = prune_dir("runs/sentiment/best", "runs/pruned", "train.jsonl", heads=0.3, ffn=0.2,
                       eval_data="dev.jsonl", recover_steps=300)

The heads and feed-forward neurons are scored on the labelled ``data`` (in the task's training format)
and the lowest removed (plmkit.compression.prune); with ``recover_steps`` the pruned model is then
fine-tuned on the same data for that many steps (plmkit.recipes.finetune, the model's own task
settings). OUT is the final model directory (tokenizer, plmkit_task.json: plmkit evaluate, predict and
pipeline take it), plus ``prune.json`` (what was removed, per-layer heads and widths, the importance
scores of the heads, the metrics on ``eval_data`` before, after pruning and after recovery) and, after
a recovery, ``recovery/`` (its run file, metrics.jsonl and curves).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plmkit.compression.records import PRUNE_FILE, RUN_FILES
from plmkit.utils.constants import MAX_SEED
from plmkit.utils.settings import Settings, setting

log = logging.getLogger("plmkit")

RESULT_FILE = PRUNE_FILE


@dataclass
class PruneSettings(Settings):
    section = "prune"
    model: str | None = setting(None, "fine-tuned model directory (plmkit finetune's OUT/best or OUT/model)",
                                metavar="DIR", required=True)
    out: str | None = setting(None, "output model directory", metavar="DIR", required=True)
    data: str | None = setting(None, "labelled data in the task's training format: the heads and neurons are "
                                     "scored on it (and recovery trains on it)", metavar="FILE", required=True)
    eval: str | None = setting(None, "labelled data evaluated before pruning, after it, and after recovery",
                               metavar="FILE")
    heads: float = setting(0.0, "fraction of all attention heads to remove", metavar="F", at_least=0, below=1)
    ffn: float = setting(0.0, "fraction of all feed-forward neurons to remove", metavar="F", at_least=0, below=1)
    ffn_multiple: int = setting(16, "keep each layer's feed-forward width a multiple of N (CPU matmul kernels run "
                                    "odd widths slower); 1: the exact fraction", metavar="N", at_least=1)
    max_examples: int | None = setting(2000, "examples of --data the importance is computed on (the first N; "
                                             "off: all)", metavar="N", at_least=1)
    batch_size: int = setting(32, "examples per batch (scoring, evaluation, recovery)", metavar="N", at_least=1)
    recover_steps: int = setting(0, "fine-tune the pruned model for N steps on --data (0: no recovery)", metavar="N",
                                 at_least=0)
    recover_lr: float = setting(5e-5, "peak learning rate of the recovery fine-tuning", metavar="LR", above=0)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", metavar="DEV")
    seed: int = setting(0, "seed of the recovery fine-tuning", metavar="N", at_least=0, at_most=MAX_SEED)
    progress: bool = setting(True, "progress bars")

    def validate(self) -> None:
        self.need(self.heads > 0 or self.ffn > 0, "nothing to prune: give --heads F and/or --ffn F (fractions)")


@dataclass
class PruneResult:
    model_dir: Path
    removed_heads: dict[int, list[int]]
    heads: list[int]  # per layer, left
    ffn_sizes: list[int]  # per layer, left
    parameters: dict[str, int]  # before, after
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # before, pruned, recovered


def prune_dir(model_dir, out_dir, data, heads: float = 0.0, ffn: float = 0.0, eval_data=None,
              **settings: Any) -> PruneResult:
    """Prune `model_dir` into `out_dir` (see the module docstring); `settings` are `PruneSettings` fields."""
    return run(PruneSettings(model=model_dir, out=out_dir, data=data, heads=heads, ffn=ffn, eval=eval_data,
                             **settings))


def run(s: PruneSettings) -> PruneResult:
    from plmkit.compression.prune import importance, prune
    from plmkit.data.loader import BatchLoader
    from plmkit.tasks.inference import load_for_inference
    from plmkit.training.rng import seed_everything
    from plmkit.utils.files import refuse_overwriting_inputs
    from plmkit.utils.text import check_file

    refuse_overwriting_inputs(s.out, "--out", [("--model", s.model), ("--data", s.data), ("--eval", s.eval)])
    refuse_foreign_out(Path(s.out))
    check_file(s.data, "--data (labelled, in the task's training format)")
    model, tokenizer, task = load_for_inference(s.model, s.device, batch_size=s.batch_size)
    task.progress = s.progress
    examples = task.read(s.data)
    features = task.encode(tokenizer, examples, model.config.label2id, path=s.data)
    eval_set = None
    if s.eval is not None:
        eval_examples = task.read(s.eval)
        eval_set = (eval_examples, task.encode(tokenizer, eval_examples, model.config.label2id, path=s.eval))

    def evaluate() -> dict[str, float]:
        return task.evaluate(model, tokenizer, *eval_set, s.batch_size) if eval_set else {}

    seed_everything(s.seed)
    result = PruneResult(Path(s.out), {}, [], [], {"before": model.num_parameters()})
    result.metrics["before"] = evaluate()
    scored = features[:s.max_examples] if s.max_examples else features
    loader = BatchLoader(scored, s.batch_size, task.collate(tokenizer), shuffle=False)
    scores = importance(model, loader, task.forward_kwargs, progress=s.progress)
    pruned = prune(model, scores, s.heads, s.ffn, s.ffn_multiple)
    result.removed_heads, result.heads, result.ffn_sizes = pruned.removed_heads, pruned.heads, pruned.ffn_sizes
    result.parameters["after"] = model.num_parameters()
    log.info("plmkit: prune: removed %d heads and %d feed-forward neurons; heads per layer %s, widths %s",
             pruned.heads_removed_now, pruned.neurons_removed_now, pruned.heads, pruned.ffn_sizes)
    result.metrics["pruned"] = evaluate()
    record = {"model": str(s.model), "data": str(s.data), "eval": s.eval, "heads": s.heads, "ffn": s.ffn,
              "ffn_multiple": s.ffn_multiple,
              "removed_heads": {str(k): v for k, v in pruned.removed_heads.items()}, "heads_per_layer": pruned.heads,
              "ffn_sizes": pruned.ffn_sizes, "head_importance": [h.tolist() for h in scores.heads],
              "importance_batches": scores.batches, "parameters": result.parameters}
    out = Path(s.out)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=_parent(out)) as tmp:
        staged = Path(tmp) / "pruned"
        _save(model, tokenizer, task, staged)
        if s.recover_steps:
            final = _recover(s, task, staged, Path(tmp) / "recovery")
            model, tokenizer, task = load_for_inference(final, s.device, batch_size=s.batch_size)
            result.metrics["recovered"] = evaluate()
        else:
            final = staged
        record["metrics"] = result.metrics
        _write(out, final, Path(tmp) / "recovery" if s.recover_steps else None, record)
    return result


def _parent(out: Path) -> Path:
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    return out.absolute().parent


def _save(model, tokenizer, task, directory: Path) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    task.save(directory)


def _recover(s: PruneSettings, task, pruned: Path, run_dir: Path) -> Path:
    """Fine-tune the pruned model directory for `recover_steps` on --data (the model's own task settings);
    returns the recovered model directory."""
    from plmkit.recipes.finetune import finetune
    own = {k: v for k, v in task.settings.to_dict().items() if v is not None}
    finetune(task.name, pruned, s.data, run_dir, None, max_steps=s.recover_steps, epochs=None, lr=s.recover_lr,
             batch_size=s.batch_size, warmup_ratio=0.1, seed=s.seed, device=s.device, progress_bar=s.progress,
             **own)
    return run_dir / "model"


def _write(out: Path, model_dir: Path, recovery: Path | None, record: dict) -> None:
    """OUT: the final model directory, prune.json and (after a recovery) the recovery run's files."""
    from plmkit.utils.files import atomic_write_dir

    def write(tmp: Path) -> None:
        for item in model_dir.iterdir():  # (sentence-transformers models carry folders: 1_Pooling/)
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        if recovery is not None:
            (tmp / "recovery").mkdir()
            for name in RUN_FILES:
                if (recovery / name).is_file():
                    shutil.copy2(recovery / name, tmp / "recovery" / name)
        (tmp / RESULT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    atomic_write_dir(out, write)


def refuse_foreign_out(out: Path) -> None:
    """--out may be new, empty, or an earlier prune's output (replaced whole); nothing else."""
    from plmkit.utils.files import refuse_foreign_dir
    refuse_foreign_dir(out, f"--out {out}", pruned_here, "give a new directory", writer="plmkit prune")


def pruned_here(directory: Path) -> bool:
    """Whether `directory` is an output of plmkit prune: its record (RESULT_FILE, with what prune writes in it)
    beside an fp32 PyTorch model, which prune writes, not an int8 copy or an ONNX export (which may carry a record
    copied from their source)."""
    from plmkit.errors import PlmkitError
    from plmkit.models.config import read_config_json
    from plmkit.models.onnx import GRAPH_FILE
    from plmkit.utils.text import read_json_object
    try:
        record = read_json_object(directory / RESULT_FILE, PlmkitError)
        config = read_config_json(directory / "config.json")
    except (OSError, PlmkitError):
        return False
    return {"removed_heads", "heads_per_layer", "ffn_sizes"} <= set(record) and (
        "quantization_config" not in config) and not (directory / GRAPH_FILE).exists()


__all__ = ["PruneResult", "PruneSettings", "RESULT_FILE", "prune_dir", "pruned_here", "refuse_foreign_out", "run"]
