"""`Trainer`: the training loop shared by pretraining and fine-tuning.

Output layout of `out_dir`::

    train_config.json       the TrainConfig of the run
    metrics.jsonl           {step, loss, lr, tokens_per_s, elapsed, grad_norm} and {step, eval_*}
    checkpoints/            step-NNNNNN/ checkpoints + `latest` (see checkpoint.py)
    best/                   best model by metric_for_best (+ best.json)
    abandoned-best/         a best/ that steps after a resumed checkpoint wrote, set aside by the resume
    model/                  final model (save_pretrained + save_extra)
    training_curves.png     loss, lr and eval metrics against step

Under torchrun (plmkit.training.distributed) every rank runs the loop on its rows of each global
batch, with the model wrapped for its strategy (DDP, or sharded in place by FSDP2, the optimizer
then built over the shards); rank 0 alone writes the files above (a sharded model's checkpoints:
every rank its DCP shards), the others waiting for it where they must. A sharded evaluation
(`distributed.sharded_evaluation`) runs on every rank; another on rank 0 alone (on every rank,
whole, when the model is sharded: its forward passes are collectives).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from plmkit.data.loader import BatchLoader
from plmkit.training import distributed
from plmkit.errors import CheckpointError, ConfigError, PlmkitError, TrainingError, WriteError
from plmkit.training.checkpoint import (
    MODEL_DIR,
    SaveExtra,
    checkpoint_name,
    export_model,
    is_sharded_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_full_optimizer_state,
    load_sharded_state,
    load_trainer_state,
    load_weights,
    prune_checkpoints,
    regrouped,
    resume_advice,
    resume_checkpoint,
    save_checkpoint,
)
from plmkit.training.fingerprint import check_resume
from plmkit.training.fingerprint import checked as checked_fingerprint
from plmkit.training.fingerprint import read as read_fingerprint
from plmkit.training.run_dir import earlier_run
from plmkit.training.config import TrainConfig
from plmkit.training.metrics import MetricsLog, plot_curves
from plmkit.training.optim import build_optimizer
from plmkit.training.rng import capture_rng, restore_rng, seed_everything
from plmkit.training.schedule import build_scheduler
from plmkit.utils.device import autocast, resolve_precision, to_device
from plmkit.utils.files import atomic_write_dir, atomic_write_text, replace_dir
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.settings import is_int
from plmkit.utils.progress import progress_bar

log = logging.getLogger(__name__)
Evaluate = Callable[[nn.Module], dict[str, float]]
STATE_FORMAT = 2  # 2: with the run's fingerprint
BEST_DIR, BEST_JSON, ABANDONED_BEST_DIR = "best", "best.json", "abandoned-best"


class UnknownMetric(TrainingError):
    """metric_for_best names no result of the evaluation."""


@dataclass
class TrainResult:
    """What a finished `Trainer.train()` reports."""

    step: int
    epoch: float
    elapsed: float  # seconds of wall-clock time, resumed runs included
    tokens: int
    tokens_per_s: float
    train_loss: float | None  # mean loss of the last logged interval
    stop_reason: str  # "max_steps" | "epochs" | "time_budget" | "early_stopping"
    eval_metrics: dict[str, float]  # last evaluation
    best_metric: float | None
    best_step: int | None
    model_dir: Path
    best_dir: Path | None


@dataclass
class RunState:
    """Counters that a checkpoint carries besides optimizer, loader and RNG states."""

    step: int = 0
    elapsed: float = 0.0
    train_time: float = 0.0  # seconds spent in training steps (no eval / saving)
    tokens: int = 0
    last_loss: float | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    last_eval_step: int = -1
    last_save_step: int = -1
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one


@dataclass
class _Interval:
    """Running totals between two log lines."""

    loss_sum: float = 0.0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, loss: float, tokens: int, seconds: float) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """Train `model` on `train_loader` as `cfg` says, writing everything under `out_dir`.

    `model(**batch)` must return an object with a scalar `.loss`.
    `evaluate(model) -> {name: value}` runs every `eval_every` steps and at the
    end (model in eval mode, under no_grad); names get an `eval_` prefix. With
    `eval_each_epoch` it also runs after the step in which each pass over the
    training data ends (with gradient accumulation a step's batches may straddle the end).
    `save_extra(dir)` is called on every model directory written (e.g. to save
    the tokenizer next to the weights).
    `forward_kwargs` are added to every training forward call, e.g. ``{"return_logits": False}``
    for causal LMs, whose loss then never materialises the logits.
    `fingerprint` (plmkit.training.fingerprint) is kept in every checkpoint; a resume compares it
    with the checkpoint's and refuses a different run unless its changes are accepted.
    `on_start()` runs when training starts, after every preparation (a recipe writes its run file then).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_loader: BatchLoader,
        out_dir: str | Path,
        evaluate: Evaluate | None = None,
        save_extra: SaveExtra | None = None,
        forward_kwargs: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        on_start: Callable[[], None] | None = None,
        eval_each_epoch: bool = False,
    ) -> None:
        if evaluate is None and (cfg.eval_every is not None or eval_each_epoch):
            what = "eval_every is set" if cfg.eval_every is not None else "eval_each_epoch is on"
            raise ConfigError(f"{what} but the Trainer got no evaluate function")
        if evaluate is None and cfg.metric_for_best is not None:
            raise ConfigError("metric_for_best is set but the Trainer got no evaluate function")
        self.model = model
        self.cfg = cfg
        self.train_loader = train_loader
        self.out_dir = Path(out_dir)
        self.evaluate = evaluate
        self.save_extra = save_extra
        self.forward_kwargs = forward_kwargs or {}
        self.fingerprint = fingerprint
        self.on_start = on_start
        self.eval_each_epoch = eval_each_epoch
        distributed.check_batch_size(train_loader.batch_size)
        self.device = distributed.device(cfg.device)
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        self.total_steps, self.length_limit = planned_steps(cfg, len(train_loader))
        self.run_batches = epoch_limit_batches(cfg, len(train_loader))  # (None without `epochs`)
        if self.total_steps is not None and cfg.warmup_steps >= self.total_steps:
            log.warning("plmkit: warmup_steps=%d is not shorter than the run (%d steps): the learning rate never "
                        "reaches its peak (--warmup-ratio scales with the run)", cfg.warmup_steps, self.total_steps)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", write=distributed.is_main())
        self.state = RunState()
        self.clock: Callable[[], float] = time.perf_counter  # seconds; replaceable in tests

    # ----------------------------------------------------------------- run
    def train(self, resume: bool | str | Path = False, accept_changes: bool = False) -> TrainResult:
        """Train to the end. `resume=True` continues from `checkpoints/latest` if there is one, a path
        from that checkpoint; `accept_changes` lets a resumed run differ from the one that wrote the
        checkpoint (its fingerprint): the changes are logged and the LR schedule goes on from where it was.
        Under torchrun, every rank calls it (the process group is set up here unless a recipe has)."""
        with distributed.process_group(self.cfg.device):
            return self._train(resume, accept_changes)

    def _train(self, resume: bool | str | Path, accept_changes: bool) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model.to(self.device)
        self.model.train()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.state = RunState()
        self._interval = _Interval()
        checkpoint = resume_checkpoint(self.checkpoint_dir, resume)
        try:
            saved = self._read_checkpoint(checkpoint, accept_changes) if checkpoint is not None else None
            self._forward = distributed.wrap(self.model, self.cfg.strategy, self.device, self.amp_dtype,
                                             self.cfg.fsdp_cpu_offload)  # (fsdp: shards it)
            if self.cfg.compile:  # (the wrapper's attributes, e.g. DDP's no_sync, stay reachable through it)
                self._forward = torch.compile(self._forward, dynamic=True)
            self.optimizer = build_optimizer(self.model, self.cfg)  # over the shards under fsdp
            self.schedule = build_scheduler(self.optimizer, self.cfg, self.total_steps)
            self._params = [p for group in self.optimizer.param_groups for p in group["params"]]
            if checkpoint is not None:
                self._restore(checkpoint, *saved)
                self._reconcile_best()
            else:
                self._start_fresh(bool(resume))
            if distributed.is_main():
                if self.on_start is not None:  # (after a restore that worked: a failed resume leaves the run file)
                    self.on_start()
                atomic_write_text(self.out_dir / "train_config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
            return self._finish(self._loop())
        except WriteError as err:  # a full disk, say: how to go on once there is room
            try:
                latest = latest_checkpoint(self.checkpoint_dir)
            except CheckpointError:
                latest = None
            how = (f"resume from checkpoint {latest} with --resume" if latest else
                   "run it again with --resume (no checkpoint was written yet: it starts over)"
                   if earlier_run(self.out_dir) else "run it again")
            raise WriteError(f"{err}. Training stopped at step {self.state.step}; once there is room, {how}") from None

    def _start_fresh(self, resume: bool) -> None:
        if list_checkpoints(self.checkpoint_dir):
            raise TrainingError(
                f"{self.checkpoint_dir} already holds checkpoints of another run; "
                "resume it (--resume, or train(resume=True)) or give an empty output directory"
            )
        if resume:
            log.warning("plmkit: no checkpoint in %s yet: starting from step 0", self.checkpoint_dir)
        self.metrics.reset()
        seed_everything(self.cfg.seed)

    def _read_checkpoint(self, checkpoint: Path, accept_changes: bool) -> tuple[dict, list[str]]:
        """(the trainer state of `checkpoint`, how this run differs from it), its weights loaded into
        the model (before any sharding)."""
        try:
            saved = load_trainer_state(checkpoint)
            changes = self._changes(checkpoint, saved, accept_changes)  # before the weights: a model of another shape
            if not is_sharded_checkpoint(checkpoint):  # (a sharded one's come with the optimizer's, once sharded)
                load_weights(self.model, checkpoint)
        except CheckpointError as err:
            damaged = "does not fit" not in str(err)
            raise CheckpointError(f"{err}. {resume_advice(checkpoint.parent, checkpoint)}" if damaged else str(err)) \
                from None
        return saved, changes

    def _restore(self, checkpoint: Path, saved: dict, changes: list[str]) -> None:
        try:
            self._restore_state(checkpoint, saved, changes)
        except PlmkitError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise CheckpointError(f"{checkpoint / 'trainer_state.pt'} is damaged ({type(err).__name__}: {err}). "
                                  f"{resume_advice(checkpoint.parent, checkpoint)}") from None

    def _changes(self, checkpoint: Path, saved: dict, accept_changes: bool) -> list[str]:
        """How this run differs from the one that wrote `checkpoint` (refused unless accepted)."""
        if not self.fingerprint:
            return []
        before = read_fingerprint(checkpoint)
        if before is None and saved.get("fingerprint") is not None:  # fingerprint.json deleted: the copy
            before = checked_fingerprint(saved["fingerprint"], checkpoint / "trainer_state.pt")
        if before is None:
            log.warning("plmkit: %s has no fingerprint (an older plmkit, or a Trainer given none): its settings and "
                        "data are not checked", checkpoint)
            return []
        return check_resume(checkpoint, self.fingerprint, accept_changes, before)

    def _restore_state(self, checkpoint: Path, saved: dict, changes: list[str]) -> None:
        state = saved["optimizer"]
        try:
            if changes:  # this run's groups and their settings (changes may regroup), each state by name
                state = regrouped(state, self.optimizer)
            if is_sharded_checkpoint(checkpoint):
                load_sharded_state(self.model, self.optimizer, checkpoint, state["param_groups"])
            elif distributed.is_sharded(self.model):
                load_full_optimizer_state(self.model, self.optimizer, state)
            else:
                self.optimizer.load_state_dict(state)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"optimizer state in {checkpoint} does not fit (were other parameters frozen?): {exc}"
            ) from exc
        self.state = RunState(**saved["run"])
        if not (is_int(self.state.step) and self.state.step >= 0 and self.state.elapsed >= 0):
            raise ValueError(f"step {self.state.step!r}, elapsed {self.state.elapsed!r}")
        if changes and self.total_steps is not None and self.state.step > self.total_steps:
            raise ConfigError(f"with the changes, the run ends at step {self.total_steps} ({self.length_limit}), but "
                              f"{checkpoint} is at step {self.state.step}: give a longer --max-steps or --epochs")
        if changes:  # the schedule from where the run was: not rebuilt from step 0
            last = saved["schedule"].get("last_factor")  # (of update step - 1)
            if last is not None:
                self.schedule.continue_from(self.state.step, self.state.elapsed, last)
            log.warning("plmkit: resuming with changes: %s; the learning-rate schedule goes on from step %d",
                        "; ".join(changes), self.state.step)
        else:
            self.schedule.load_state_dict(saved["schedule"])
        self.train_loader.load_state_dict(saved["loader"], strict=not changes)
        self._interval = _Interval(**saved.get("interval", {}))  # steps since the last log line
        self.metrics.truncate_after(self.state.step)
        restore_rng(saved["rng"])  # last: nothing above may draw random numbers after it
        log.info("resuming from %s (step %d)", checkpoint, self.state.step)

    def _reconcile_best(self) -> None:
        """After a resume: OUT/best must hold the model of the restored best step (see `_restore_best_dir`);
        where no such model is left, the best is forgotten and the next evaluation's model becomes OUT/best."""
        kept = distributed.broadcast(self._restore_best_dir() if distributed.is_main() else None)
        if not kept:
            self.state.best_metric = self.state.best_step = None

    def _restore_best_dir(self) -> bool:
        """Whether OUT/best holds the model of the restored best step (or there is none) once a best/
        written by another step (the steps after the checkpoint, which this run replaces) is moved
        to OUT/abandoned-best (replacing one there) and the best step's model copied back from its
        checkpoint, if one is left."""
        st, best = self.state, self.out_dir / BEST_DIR
        written = best_step_of(best)
        if best.exists() and written == st.best_step:
            return True
        if best.exists():
            replace_dir(best, self.out_dir / ABANDONED_BEST_DIR)
            log.warning("plmkit: %s held the best model of step %s, not the best of this run, resumed from step %d "
                        "(best step %s): moved to %s", best, "?" if written is None else written, st.step,
                        st.best_step, self.out_dir / ABANDONED_BEST_DIR)
        if st.best_step is None:
            return True
        model = self.checkpoint_dir / checkpoint_name(st.best_step) / MODEL_DIR
        name = self._best_metric_name()
        if model.is_dir():
            def copy(tmp: Path) -> None:
                shutil.copytree(model, tmp, dirs_exist_ok=True)
                write_best_json(tmp, st.best_step, name, st.best_metric)

            atomic_write_dir(best, copy)
            log.info("best model (step %d, %s=%.4g) copied back to %s from %s", st.best_step, name,
                     st.best_metric, best, model.parent)
            return True
        log.warning("plmkit: the best model so far (step %d, %s=%.4g) is no longer on disk (no checkpoint of that "
                    "step is left): the next evaluation's model becomes %s", st.best_step, name, st.best_metric, best)
        return False

    def _best_metric_name(self) -> str:
        name = self.cfg.metric_for_best or "metric"
        return name if name.startswith("eval_") else f"eval_{name}"

    def _loop(self) -> str:
        cfg, st = self.cfg, self.state
        batches = self.train_loader.forever()
        self._lr = cfg.lr
        self._started, self._elapsed_before = self.clock(), st.elapsed
        bar = progress_bar(total=self.total_steps, initial=st.step, unit="step", dynamic_ncols=True,
                   disable=not (cfg.progress_bar and distributed.is_main()))
        try:
            while True:
                self._tick()
                reason = self._stop_reason()
                if reason is not None:
                    return reason
                step_start, epochs_before = self.clock(), math.floor(self.train_loader.epochs_done)
                self._lr = cfg.lr * self.schedule.update(st.step, st.elapsed)
                loss, grad_norm, tokens = self._train_step(batches)
                seconds = self.clock() - step_start
                st.step += 1
                st.tokens += tokens
                st.train_time += seconds
                self._interval.add(loss, tokens, seconds)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self._lr:.2e}", tok_s=f"{self._interval.tokens_per_s:,.0f}", refresh=False)
                self._tick()
                if st.step % cfg.log_every == 0:
                    self._log(grad_norm)
                stop_early = False
                if (cfg.eval_every and st.step % cfg.eval_every == 0
                        or self.eval_each_epoch and math.floor(self.train_loader.epochs_done) > epochs_before):
                    stop_early = self._run_evaluation()
                if cfg.save_every and st.step % cfg.save_every == 0:
                    self._save_checkpoint()
                distributed.fail_for_test(st.step)
                if stop_early:
                    return "early_stopping"
        finally:
            bar.close()

    def _tick(self) -> None:
        self.state.elapsed = self._elapsed_before + self.clock() - self._started

    def _stop_reason(self) -> str | None:
        if self.total_steps is not None and self.state.step >= self.total_steps:
            return self.length_limit
        if self.cfg.time_budget is not None and self.state.elapsed >= self.cfg.time_budget:
            return "time_budget"
        patience = self.cfg.early_stopping_patience
        if patience is not None and self.state.bad_evals >= patience:  # a resumed run that had stopped early
            return "early_stopping"
        return None

    # ---------------------------------------------------------------- step
    def _train_step(self, batches: Iterator[dict[str, Any]]) -> tuple[float, float, int]:
        """One optimizer update over `grad_accum_steps` batches: (mean loss, grad norm, tokens).

        Each micro-batch's loss (a mean over its items: `loss_items`) is weighted by its share of the
        items of the whole step, over every micro-batch and rank, so that the step's loss and
        gradients are those of the mean over the global batch, at any world size and accumulation;
        with one rank and the same count in every micro-batch that is the plain mean of their losses.
        The last step of a run that `epochs` ends takes the batches left (`micro_batches`)."""
        accum, world = micro_batches(self.cfg, self.run_batches, self.state.step), distributed.world_size()
        micro = [distributed.shard(next(batches)) for _ in range(accum)]
        parts = list((getattr(self.model, "loss_items", None) or {"loss": None}).items())
        counts = torch.tensor([[item_count(batch, kind) if own else 0 for _, kind in parts] for batch, own in micro],
                              dtype=torch.float64)
        tokens = sum(count_tokens(batch) for batch, own in micro if own)
        totals = distributed.all_reduce_sum(torch.cat([counts.sum(0), torch.tensor([float(tokens)],
                                                                                   dtype=torch.float64)]))
        totals, tokens = totals[:-1].tolist(), int(totals[-1])
        loss_sum = torch.zeros((), device=self.device)
        micro = [(to_device(batch, self.device), own) for batch, own in micro]  # (GPU: every copy queued at once)
        for i, (batch, _) in enumerate(micro):
            sync = i == accum - 1 or world == 1  # gradients all-reduced (reduce-scattered) on the last micro-batch only
            with distributed.gradient_sync(self._forward, sync), \
                    distributed.rank_rng(self.cfg.seed, self.state.step, i):
                with autocast(self.device, self.amp_dtype):
                    output = self._forward(**batch, **self.forward_kwargs)
                loss = weighted_loss(output, parts, counts[i].tolist(), totals)
                (loss * world if world > 1 else loss).backward()  # (DDP and FSDP average the gradients over the ranks)
            loss_sum += loss.detach().float()
        norm = gradient_norm(self._params, self.cfg.grad_clip).float().to(loss_sum.device)  # (CPU: --fsdp-cpu-offload)
        loss_sum = distributed.all_reduce_sum(loss_sum)  # (the gradients, and so their norm, are the same everywhere)
        loss_value, norm_value = torch.stack([loss_sum, norm]).tolist()  # the one host sync per step
        if not math.isfinite(loss_value) or not math.isfinite(norm_value):  # before the step: weights stay finite
            self.optimizer.zero_grad(set_to_none=True)
            raise self._non_finite_error(loss_value, norm_value)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value, tokens

    def _non_finite_error(self, loss: float, grad_norm: float) -> TrainingError:
        what = f"loss ({loss})" if not math.isfinite(loss) else f"gradient norm ({grad_norm})"
        latest = latest_checkpoint(self.checkpoint_dir)
        kept = f"the last checkpoint {latest} is untouched" if latest else "no checkpoint was written"
        return TrainingError(
            f"non-finite {what} at step {self.state.step + 1}; training stopped and {kept}. "
            f"Try a lower lr (now {self.cfg.lr:g}) or more warmup, gradient clipping "
            f"(grad_clip, now {self.cfg.grad_clip}), or precision='bf16' / 'fp32' (now {self.cfg.precision!r})"
        )

    # ------------------------------------------------ logging, eval, saving
    def _log(self, grad_norm: float | None = None) -> None:
        interval, st = self._interval, self.state
        st.last_loss = interval.loss_sum / interval.steps
        record = {
            "step": st.step,
            "loss": st.last_loss,
            "lr": self._lr,
            "tokens_per_s": round(interval.tokens_per_s, 1),
            "elapsed": round(st.elapsed, 3),
        }
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
        self.metrics.append(record)
        self._interval = _Interval()

    def _run_evaluation(self) -> bool:
        """Evaluate, log, keep the best model; True when early stopping says stop."""
        st, cfg = self.state, self.cfg
        if getattr(self.evaluate, "sharded", False):  # every rank its part; rank 0's metrics for all
            raw = distributed.broadcast(self._evaluate())
        elif distributed.is_sharded(self.model):  # every rank the whole: a sharded model's forward is a collective
            raw = self._evaluate()
        else:
            raw = distributed.from_main(self._evaluate)  # (rank 0 evaluates; the others wait for its results)
        metrics = {(k if k.startswith("eval_") else f"eval_{k}"): float(v) for k, v in raw.items()}
        st.last_eval, st.last_eval_step = metrics, st.step
        self.metrics.append({"step": st.step, **metrics})
        log.info("step %d: %s", st.step, "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if cfg.metric_for_best is None:
            return False
        name = self._best_metric_name()
        if name not in metrics:
            raise UnknownMetric(f"metric_for_best={cfg.metric_for_best!r} is not among the evaluation results "
                                f"{sorted(metrics)}: give one of them")
        value = metrics[name]
        improved = math.isfinite(value) and (
            st.best_metric is None or (value > st.best_metric if cfg.greater_is_better else value < st.best_metric)
        )
        if improved:
            st.best_metric, st.best_step, st.bad_evals = value, st.step, 0
            self._save_best(name, value)
        else:
            st.bad_evals += 1
        return cfg.early_stopping_patience is not None and st.bad_evals >= cfg.early_stopping_patience

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        try:
            with torch.no_grad():
                return self.evaluate(self.model)
        finally:
            self.model.train()

    def _export(self, directory: Path, more: Callable[[Path], None] | None = None) -> None:
        """The model as an ordinary Hugging Face directory, written by rank 0 (a sharded model's whole
        state gathered onto it first, by every rank), then `more(directory)`."""
        state = distributed.full_state_dict(self.model)

        def write(tmp: Path) -> None:
            export_model(self.model, tmp, self.save_extra, state)
            if more is not None:
                more(tmp)

        if distributed.is_main():
            atomic_write_dir(directory, write)

    def _save_best(self, name: str, value: float) -> None:
        self._export(self.out_dir / BEST_DIR, lambda tmp: write_best_json(tmp, self.state.step, name, value))

    def _save_checkpoint(self) -> None:
        st = self.state
        self._tick()
        st.last_save_step = st.step
        sharded = distributed.is_sharded(self.model)  # (then DCP: every rank writes its shards)
        trainer_state = {
            "format": STATE_FORMAT,
            "run": asdict(st),
            "optimizer": None if sharded else self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "loader": self.train_loader.state_dict(),
            "interval": asdict(self._interval),
            "rng": capture_rng(),
            "config": self.cfg.to_dict(),
            "fingerprint": self.fingerprint,  # (a copy: fingerprint.json beside it is what a resume reads first)
        }
        if sharded or distributed.is_main():
            save_checkpoint(self.checkpoint_dir, st.step, self.model, trainer_state, self.save_extra, self.fingerprint,
                            optimizer=self.optimizer if sharded else None)
        if distributed.is_main():
            prune_checkpoints(self.checkpoint_dir, self.cfg.keep_last)
        distributed.barrier()

    def _finish(self, stop_reason: str) -> TrainResult:
        st, cfg = self.state, self.cfg
        logged = bool(self._interval.steps)
        if logged:
            self._log()
        unknown = None
        if self.evaluate is not None and st.last_eval_step != st.step:
            try:
                self._run_evaluation()
            except UnknownMetric as err:  # said after the model is saved: the training is not lost
                unknown = err
            logged = True
        if cfg.save_every and (st.last_save_step != st.step or logged):  # a resumed finished run logs nothing twice
            self._save_checkpoint()
        model_dir = self.out_dir / "model"
        self._export(model_dir)
        distributed.barrier()  # (every rank returns once the model is there)
        if unknown is not None:
            raise TrainingError(f"{unknown} (the model is saved in {model_dir})")
        curves = self.out_dir / "training_curves.png"
        if distributed.is_main():
            plot_curves(self.metrics.read(), curves)
        self._tick()
        result = TrainResult(
            step=st.step,
            epoch=self.train_loader.epochs_done,
            elapsed=st.elapsed,
            tokens=st.tokens,
            tokens_per_s=st.tokens / st.train_time if st.train_time > 0 else 0.0,
            train_loss=st.last_loss,
            stop_reason=stop_reason,
            eval_metrics=dict(st.last_eval),
            best_metric=st.best_metric,
            best_step=st.best_step,
            model_dir=model_dir,
            best_dir=self.out_dir / BEST_DIR if st.best_step is not None else None,
        )
        log.info("%s", format_summary(result, curves, cfg.metric_for_best))
        return result


# --------------------------------------------------------------- helpers
def planned_steps(cfg: TrainConfig, batches_per_epoch: int) -> tuple[int | None, str | None]:
    """(total optimizer steps, which limit sets it); (None, None) for a time budget alone.

    `epochs` gives ceil(epoch_limit_batches / grad_accum_steps) steps: the accumulation goes on across
    epochs, and a last step takes the batches left (`micro_batches`), so that every batch is trained on.
    """
    limits = []
    if cfg.max_steps is not None:
        limits.append((cfg.max_steps, "max_steps"))
    if cfg.epochs is not None:
        limits.append((math.ceil(epoch_limit_batches(cfg, batches_per_epoch) / cfg.grad_accum_steps), "epochs"))
    return min(limits) if limits else (None, None)


def epoch_limit_batches(cfg: TrainConfig, batches_per_epoch: int) -> int | None:
    """The batches that `epochs` trains on: floor(epochs * batches_per_epoch), at least 1; None without it."""
    return None if cfg.epochs is None else max(1, math.floor(cfg.epochs * batches_per_epoch))


def micro_batches(cfg: TrainConfig, run_batches: int | None, step: int) -> int:
    """The batches accumulated into the optimizer step after `step`: grad_accum_steps, but those left of
    the `run_batches` that `epochs` trains on in the run's last step (at least 1)."""
    accum = cfg.grad_accum_steps
    return accum if run_batches is None else max(1, min(accum, run_batches - step * accum))


def gradient_norm(params: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """The norm of the whole gradient of `params` (under FSDP2: over every rank's shards), the gradient
    clipped to `clip` first when given; measured without clipping too, so that a non-finite gradient
    is caught before the optimizer steps with it."""
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    elif hasattr(torch.nn.utils, "get_total_norm"):  # (torch >= 2.6)
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    else:  # (a clip to infinity scales by 1)
        norm = torch.nn.utils.clip_grad_norm_(params, math.inf)
    return distributed.local_value(norm)


def write_best_json(directory: Path, step: int, metric: str, value: float) -> None:
    (directory / BEST_JSON).write_text(json.dumps({"step": step, "metric": metric, "value": value}) + "\n",
                                       encoding="utf-8")


def best_step_of(best: Path) -> int | None:
    """The step whose model `best` (OUT/best) holds, from its best.json; None when it says none."""
    try:
        step = json.loads((best / BEST_JSON).read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if is_int(step) else None


def count_tokens(batch: dict[str, Any]) -> int:
    """Real tokens in a batch: attention_mask.sum(), else input_ids.numel(), else 0."""
    if torch.is_tensor(batch.get("attention_mask")):
        return int(batch["attention_mask"].sum())
    if torch.is_tensor(batch.get("input_ids")):
        return batch["input_ids"].numel()
    return 0


def item_count(batch: dict[str, Any], kind: str | None) -> int:
    """The items a loss of `kind` (`PreTrainedModel.loss_items`) is a mean over in `batch`: labelled
    tokens (or labelled examples: labels != -100), labelled next tokens, real input tokens, or examples;
    1 for a model that does not say (micro-batches and ranks then weigh the same)."""
    if kind in ("tokens", "next_tokens"):  # (a batch without labels has none)
        labels = batch.get("labels")
        if not torch.is_tensor(labels):
            return 0
        labels = labels[:, 1:] if kind == "next_tokens" else labels
        return int((labels != IGNORE_INDEX).sum())
    if kind == "input_tokens":
        return count_tokens(batch)
    if kind is not None:
        return distributed.batch_rows(batch) or 1
    return 1


def weighted_loss(output: Any, parts: list[tuple[str, str | None]], counts: list[float],
                  totals: list[float]) -> torch.Tensor:
    """The sum of the output's losses `parts`, each times its share `count / total` of the step's items
    (a part with no items here adds zero, even where its mean over none is NaN)."""
    loss = None
    for (name, _), count, total in zip(parts, counts, totals):
        value = loss_of(output) if name == "loss" else _part(output, name)
        if value is None:
            continue
        term = value * count / total if count else torch.nan_to_num(value) * 0.0
        loss = term if loss is None else loss + term
    if loss is None:
        raise TrainingError(f"the model returned none of its losses {[name for name, _ in parts]}")
    return loss


def _part(output: Any, name: str) -> torch.Tensor | None:
    return output.get(name) if isinstance(output, dict) else getattr(output, name, None)


def loss_of(output: Any) -> torch.Tensor:
    loss = output["loss"] if isinstance(output, dict) else getattr(output, "loss", None)
    if loss is None:
        raise TrainingError("the model returned no loss; does the batch hold the labels (e.g. 'labels')?")
    return loss


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_summary(result: TrainResult, curves: Path | None = None, metric: str | None = None) -> str:
    lines = [
        f"training done: {result.step} steps ({result.epoch:.2f} epochs) in {format_duration(result.elapsed)}, "
        f"stopped by {result.stop_reason}",
        f"  throughput {result.tokens_per_s:,.0f} tokens/s ({result.tokens:,} tokens)"
        + (f", last loss {result.train_loss:.4f}" if result.train_loss is not None else ""),
    ]
    if result.eval_metrics:
        lines.append("  final eval: " + "  ".join(f"{k}={v:.4g}" for k, v in result.eval_metrics.items()))
    if result.best_step is not None:
        lines.append(f"  best {metric or 'metric'} {result.best_metric:.4g} at step {result.best_step} -> {result.best_dir}")
    lines.append(f"  model: {result.model_dir}" + (f"   curves: {curves}" if curves else ""))
    return "\n".join(lines)
