"""Several processes under `torchrun`: the process group, who this process is, what only rank 0 does.

    torchrun --nproc_per_node 2 -m plmkit pretrain ...     # every rank runs the same command

`process_group(device)` sets the group up from torchrun's environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), gloo on the CPU and NCCL on CUDA, chosen from
the run's device, and tears it down at the end; the recipes and `Trainer.train` enter it (once: an
inner one does nothing). Outside torchrun (no ``WORLD_SIZE`` above 1) nothing here does anything:
rank 0 of 1, no collectives, the run as it always was.

What only rank 0 does: logging at INFO (the others show errors only), progress bars, metrics.jsonl,
run.yaml, checkpoints and model directories; the others wait at a `barrier` where they must not
go on before a file exists (`main_first`: rank 0 trains the tokenizer or builds a cache, then the
others read it). Every rank reads and checks its data itself before the first collective, so bad
input ends every rank with the same error; a rank that fails alone ends the job all the same, as
torchrun stops the other workers when one exits with an error.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from plmkit.errors import ConfigError
from plmkit.utils.device import resolve_device
from plmkit.utils.progress import bars_off

STRATEGIES = ("ddp", "fsdp")
TIMEOUT = datetime.timedelta(minutes=60)  # the longest a rank waits for another (rank 0 evaluating, saving)


def _env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"the environment variable {name}={os.environ[name]!r} is not a number "
                          "(torchrun sets it)") from None


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes of the run: the group's size, or torchrun's WORLD_SIZE before the group exists."""
    return dist.get_world_size() if active() else _env("WORLD_SIZE", 1)


def rank() -> int:
    return dist.get_rank() if active() else _env("RANK", 0)


def local_rank() -> int:
    return _env("LOCAL_RANK", 0)


def is_main() -> bool:
    return rank() == 0


def device(name: str = "auto") -> torch.device:
    """The run's device (`resolve_device`); under torchrun on GPUs, this process's GPU (LOCAL_RANK)."""
    resolved = resolve_device(name)
    if resolved.type == "cuda" and resolved.index is None and world_size() > 1:
        return torch.device("cuda", local_rank())
    return resolved


@contextlib.contextmanager
def process_group(device_name: str = "auto") -> Iterator[None]:
    """The process group of a torchrun job while the block runs (see the module docstring)."""
    if world_size() <= 1 or active():
        yield
        return
    where = device(device_name)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    _import_before_the_group()
    dist.init_process_group("nccl" if where.type == "cuda" else "gloo", timeout=TIMEOUT, store=_attempt_store(),
                            rank=rank(), world_size=world_size(),
                            **({"device_id": where} if where.type == "cuda" else {}))
    logger = logging.getLogger("plmkit")
    old_level = logger.level
    if not is_main():  # one log and one progress bar per job: rank 0's
        logger.setLevel(logging.ERROR)
    try:
        with bars_off(not is_main()):
            yield
        dist.barrier()  # (the ranks leave together: rank 0 may still be writing files)
    finally:
        logger.setLevel(old_level)
        dist.destroy_process_group()


def _import_before_the_group() -> None:
    """Import torch.distributed.nn while no process group exists. Its functions take ``group=group.WORLD``
    as a default argument, so imported inside the block (torch.distributed.fsdp imports it: `wrap`,
    `is_sharded`) they would keep the group alive after destroy_process_group, and with it gloo's worker
    threads, into the interpreter's exit. There a worker thread that drops the last reference to a tensor
    Python created (a collective's input, released late on a loaded machine) takes the GIL after
    finalization began: Python ends the thread inside a C++ destructor, and std::terminate aborts the
    process ("terminate called without an active exception")."""
    import torch.distributed.nn  # noqa: F401


def _attempt_store() -> dist.Store:
    """torchrun's store (env://), under a prefix of this attempt: after a restart, the store still holds
    the dead workers' addresses, and a new worker that read one (before its peer wrote the new one) would
    wait on a closed port (pytorch/pytorch#135712)."""
    store, _, _ = next(dist.rendezvous("env://", rank=rank(), world_size=world_size(), timeout=TIMEOUT))
    return dist.PrefixStore(f"plmkit/attempt-{_env('TORCHELASTIC_RESTART_COUNT', 0)}", store)


def restarted() -> bool:
    """Whether torchrun restarted this job's workers after one failed (``--max-restarts N``:
    TORCHELASTIC_RESTART_COUNT above 0)."""
    return _env("TORCHELASTIC_RESTART_COUNT", 0) > 0


def resume_after_restart(resume: Any, overwrite: bool = False) -> tuple[Any, bool]:
    """(resume, overwrite) of a run: in workers torchrun restarted, resume from the latest checkpoint
    (as --resume: from step 0 if none was written yet; also when the first attempt resumed from an
    older one), and never overwrite what the first attempt wrote; otherwise as given."""
    if not restarted():
        return resume, overwrite
    if is_main():
        logging.getLogger("plmkit").warning("plmkit: torchrun restarted the workers (restart %s): resuming from the "
                                            "latest checkpoint", os.environ.get("TORCHELASTIC_RESTART_COUNT"))
    return True, False


def fail_for_test(step: int) -> None:
    """A test hook: with PLMKIT_TEST_FAIL_AT_STEP=N the last rank fails after step N, once (not in
    restarted workers), as a crashed node would."""
    if _env("PLMKIT_TEST_FAIL_AT_STEP", -1) == step and not restarted() and rank() == world_size() - 1:
        raise RuntimeError(f"rank {rank()} fails after step {step} (PLMKIT_TEST_FAIL_AT_STEP, a test hook)")


def barrier() -> None:
    if active() and world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it writes a tokenizer or a cache), then the others (who find it).
    Should rank 0 fail in it, torchrun ends the others waiting here."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if not active() or world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(fn: Callable[[], Any]) -> Any:
    """`fn()` run on rank 0 alone (an evaluation), its result on every rank, and rank 0's random state
    after it on every rank too (the ranks go on drawing the same global batches)."""
    if not active() or world_size() == 1:
        return fn()
    from plmkit.training.rng import capture_rng, restore_rng
    result = fn() if is_main() else None
    result, state = broadcast((result, capture_rng() if is_main() else None))
    if not is_main():
        restore_rng(state)
    return result


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over the ranks of `tensor` (in place; the tensor itself outside a group)."""
    if active() and world_size() > 1:
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu)
            tensor.copy_(on_gpu)
        else:
            dist.all_reduce(tensor)
    return tensor


class EvalShard:
    """This rank's part of an evaluation that every rank runs (an evaluate function marked by
    `sharded_evaluation`): each rank runs every batch's forward pass on its own rows (`rows`, as in
    training: the ranks run the same forward passes, which a sharded model's collectives need), and
    the metrics are reduced across the ranks. What adds up (losses, correct counts, token counts,
    confusion matrices) is summed on every rank (`sums`): no rank holds all predictions. What needs
    every prediction at once (entity F1 by seqeval, correlations' ranks) is gathered to rank 0
    (`gather`, with gather_object: the others keep only their own part), which computes the metric;
    the Trainer then gives rank 0's metrics to every rank. Outside torchrun: the whole evaluation."""

    def rows(self, batch: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(this rank's rows of `batch`, whether it has any): see `shard`; a rank with none still
        runs the forward pass (on the whole batch) and counts nothing of it."""
        return shard(batch)

    def sums(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64)."""
        return all_reduce_sum(torch.tensor(values, dtype=torch.float64)).tolist() if values else []

    def gather(self, items: list, dst: int = 0) -> list | None:
        """Every rank's `items` (picklable), concatenated in rank order, on rank `dst`; None on the others."""
        if not active() or world_size() == 1:
            return items
        parts: list | None = [None] * world_size() if rank() == dst else None
        dist.gather_object(items, parts, dst=dst)
        return [item for part in parts for item in part] if parts is not None else None

    def share(self, items: list) -> list:
        """This rank's share of `items`, as `rows` takes a batch's (possibly none)."""
        start, stop = _bounds(len(items))
        return items[start:stop]

    def owns(self, key: int) -> bool:
        """Whether this rank scores the example numbered `key` (`route` sends it what the others found)."""
        return key % world_size() == rank()

    def route(self, items: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """The (key, value) items of every rank whose key this rank `owns`: what each rank found about an
        example (the spans of its windows) brought together on one rank, which scores it; no rank gets
        the others' examples."""
        if not active() or world_size() == 1:
            return items
        mine = None
        for dst in range(world_size()):  # (one gather per rank: each receives its examples' items)
            got = self.gather([item for item in items if item[0] % world_size() == dst], dst)
            mine = got if dst == rank() else mine
        return mine

    @contextlib.contextmanager
    def unsharded(self, model: torch.nn.Module) -> Iterator[None]:
        """A block in which the ranks may run different numbers of forward passes (each generating its
        own rows until they end): a model sharded by FSDP2 has its whole weights gathered on every rank
        first (one collective) and kept through every forward pass, then sharded again; any other
        model is left as it is (its forward passes need no other rank)."""
        if not is_sharded(model):
            yield
            return
        from torch.distributed.fsdp import FSDPModule
        modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for m in modules:
            m.unshard()
        model.set_reshard_after_forward(False)
        try:
            yield
        finally:
            model.set_reshard_after_forward(True)  # as `wrap` made it: the blocks reshard after forward,
            model.set_reshard_after_forward(False, recurse=False)  # the root (used again at once) does not
            for m in modules:
                m.reshard()


def sharded_evaluation(evaluate: Callable) -> Callable:
    """Mark an evaluate function as one every rank runs on its part, with an `EvalShard` (see it)."""
    evaluate.sharded = True
    return evaluate


def check_batch_size(batch_size: int, flag: str = "--batch-size") -> None:
    """The batch size is the global batch: refused, by name, when the world size does not divide it."""
    world = world_size()
    if batch_size % world:
        raise ConfigError(f"{flag} {batch_size} is the global batch, shared by the {world} processes: give a "
                          f"multiple of the world size {world} (e.g. {batch_size - batch_size % world or world})")


def shard(batch: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(this rank's rows of a global batch, whether it has any): rank r of W takes rows
    [r*B//W, (r+1)*B//W) of every tensor (or list) with one row per example. A rank left with no
    rows (a last batch smaller than W) gets the whole batch, which the Trainer weights by zero."""
    rows = batch_rows(batch)
    if world_size() == 1 or rows is None:
        return batch, True
    start, stop = _bounds(rows)
    if start == stop:
        return batch, False
    return {k: v[start:stop] if _per_row(v, rows) else v for k, v in batch.items()}, True


def _bounds(n: int) -> tuple[int, int]:
    """[start, stop) of this rank's share of n rows: rows [r*n//W, (r+1)*n//W)."""
    world, r = world_size(), rank()
    return n * r // world, n * (r + 1) // world


def batch_rows(batch: dict[str, Any]) -> int | None:
    """Examples in a batch: the rows of input_ids (else of its first tensor)."""
    first = batch.get("input_ids")
    if not torch.is_tensor(first):
        first = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), None)
    return None if first is None else int(first.shape[0])


def _per_row(value: Any, rows: int) -> bool:
    if torch.is_tensor(value):
        return value.dim() > 0 and value.shape[0] == rows
    return isinstance(value, list) and len(value) == rows


@contextlib.contextmanager
def rank_rng(seed: int, step: int, micro: int) -> Iterator[None]:
    """Under several ranks, a random stream of this rank's own for the block (dropout in a forward),
    seeded from (seed, step, micro-step, rank), after which the shared stream goes on as before: the
    ranks draw different dropout masks yet build the same global batches (MLM masks) at every step."""
    if world_size() == 1:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(hash((seed, step, micro, rank())) % 2**63)
        yield


def wrap(model: torch.nn.Module, strategy: str, where: torch.device, amp_dtype: torch.dtype | None = None,
         cpu_offload: bool = False) -> torch.nn.Module:
    """The model a training step calls under several ranks (the model itself for one).

    ddp: a DistributedDataParallel around the model. fsdp: the model itself, sharded in place with
    FSDP2 (`fully_shard`) per Transformer block and then at the root (embeddings, heads, final norm,
    tied weights; first any child the model names in `called_apart`, which is then called on its own), on
    an explicit 1-d device mesh of the run's device type: without one, fully_shard
    takes CUDA on a machine with GPUs even under gloo. Each rank then holds 1/world of every
    parameter, gradient and optimizer state (build the optimizer after this); a block's full weights
    exist only while it runs (all-gathered before its forward and backward, resharded after). LoRA
    layers are sharded with their block (frozen weights and trainable adapters alike); the saved
    model merges them from the gathered whole (`full_state_dict`). On GPUs, `fsdp_policies` adds the
    mixed-precision and offload policies."""
    if world_size() == 1:
        return model
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        from plmkit.nn.block import TransformerBlock
        mesh = init_device_mesh(where.type, (world_size(),))
        policies = fsdp_policies(where, amp_dtype, cpu_offload)
        for block in [m for m in model.modules() if isinstance(m, TransformerBlock)]:
            fully_shard(block, mesh=mesh, **policies)
        for name in getattr(model, "called_apart", ()):  # a child called on its own (a distillation's student,
            fully_shard(getattr(model, name), mesh=mesh, **policies)  # which evaluation runs): its own unit
        return fully_shard(model, mesh=mesh, **policies)
    from torch.nn.parallel import DistributedDataParallel
    # (torch's way of leaving parameters out of DDP, for now a static method; find_unused_parameters would
    # search the autograd graph at every step for what never changes)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, unused_by_loss(model))
    return DistributedDataParallel(model, device_ids=[where.index] if where.type == "cuda" else None,
                                   forward_sync_buffers=False)


def unused_by_loss(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that no training loss reads, which DDP must leave out (it stops at the
    second step when one got no gradient): an encoder-decoder's decoder reads its encoder's last hidden
    states only (`encode`), so what that encoder holds outside its body (`body_roots`), BERT's pooler
    in bert2bert, gets none."""
    unused = set()
    for module in model.modules():
        encoder = module.get_encoder() if getattr(module, "is_encoder_decoder", False) else None
        roots = getattr(encoder, "body_roots", None)
        if roots:
            unused.update(id(p) for name, p in encoder.named_parameters() if name.split(".")[0] not in roots)
    return [name for name, p in model.named_parameters() if id(p) in unused]


def fsdp_policies(where: torch.device, amp_dtype: torch.dtype | None, cpu_offload: bool) -> dict[str, Any]:
    """`fully_shard`'s policies on GPUs (written for them, not run here; none on the CPU): with bf16
    precision, blocks run on bf16 copies of the weights (all-gathered in bf16: half the traffic) while the
    shards, the optimizer state and the gradient reduce-scatter stay fp32 (a sum of bf16 gradients would
    lose their low bits); with `cpu_offload`, the shards live in pinned CPU memory and the optimizer
    steps there (`--fsdp-cpu-offload`)."""
    if where.type != "cuda":
        if cpu_offload:
            raise ConfigError("--fsdp-cpu-offload moves FSDP's shards from the GPUs to the CPU; this run is on the CPU "
                              "already: leave it out")
        return {}
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy
    policies: dict[str, Any] = {}
    if amp_dtype == torch.bfloat16:
        policies["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cpu_offload:
        policies["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
    return policies


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` is sharded by FSDP2 (`wrap` with strategy fsdp)."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, sync: bool) -> Iterator[None]:
    """A backward in the block syncs the gradients across ranks only if `sync` (the last micro-step of
    an accumulation): DDP's `no_sync` otherwise; FSDP2 then skips the reduce-scatter and keeps the
    parameters unsharded until the last micro-step (no all-gather again either)."""
    if is_sharded(model):
        model.set_requires_gradient_sync(sync)
        model.set_reshard_after_backward(sync)
        yield
    elif sync or not hasattr(model, "no_sync"):
        yield
    else:
        with model.no_sync():
            yield


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor of a DTensor (a gradient norm under FSDP2: the reduction over the shards, which
    gives every rank the norm of the whole gradient), the tensor itself otherwise."""
    from torch.distributed.tensor import DTensor
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict gathered from the shards onto rank 0's CPU (every rank must call
    it: it is a collective; the others get an empty dict); None for a model that is not sharded
    (its own state dict is whole)."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    first: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():  # tied weights: one tensor again, saved once
        earlier = first.setdefault(id(tensor), name)
        if earlier != name and earlier in whole and name in whole:
            whole[name] = whole[earlier]
    return whole


__all__ = ["STRATEGIES", "EvalShard", "active", "all_reduce_sum", "barrier", "batch_rows", "broadcast",
           "check_batch_size", "device", "fail_for_test", "from_main", "fsdp_policies", "full_state_dict",
           "gradient_sync", "is_main", "is_sharded", "local_rank", "local_value", "main_first", "process_group", "rank",
           "rank_rng", "restarted", "resume_after_restart", "shard", "sharded_evaluation", "wrap", "world_size"]
