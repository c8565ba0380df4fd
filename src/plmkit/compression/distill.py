"""Task-specific knowledge distillation: a small student trained to imitate a fine-tuned teacher.

The losses (`DistillationModel.forward`), on the distributions a task's `soft_targets` names
(`TARGETS`): an example's classes (classification, relations), each real token's (NER), or the start
and the end of an answer over a window's real tokens (extractive QA):

* soft targets (Hinton et al., 2015): KL(softmax(teacher / T) || softmax(student / T)), scaled by T²
  so that its gradients keep their size whatever the temperature T (QA: the mean of the start's and
  the end's, padding positions outside both distributions);
* hard labels: the task's own cross-entropy over the labelled rows (QA: the mean of the start's and
  the end's); a record without a label has soft targets only;
* hidden states (TinyBERT, Jiao et al., 2020): the MSE between the student's states, through a learned
  projection when the widths differ, and the teacher's, at mapped layers (the embeddings' output
  included), on real tokens;
* attention distributions (TinyBERT; MiniLM, Wang et al., 2020): the KL between the teacher's and the
  student's attention probabilities at mapped layers, over real query tokens; when the head counts
  differ, the heads' mean distributions are compared.

    loss = alpha * soft + (1 - alpha) * hard + hidden_weight * hidden + attention_weight * attention

Student layer i is mapped to teacher layer (i + 1) * L / N - 1 (rounded up; N student layers, L the
teacher's): the top layers meet, as in TinyBERT's uniform mapping. `student_from_teacher` starts a
student from those very layers (DistilBERT's initialisation: every k-th layer, the embeddings and the
task head copied); `plmkit.compression.width` narrows such a student too. A narrowed student's hidden states
are compared with the teacher's at the channels it kept (no projection).

Sequence-level distillation (Kim & Rush, 2016) of generative tasks needs no loss here: the teacher
writes the targets (`Task.teacher_targets`) and the student is fine-tuned on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import ConfigError
from plmkit.models.outputs import ModelOutput
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.settings import Settings, setting

# what a task's `Task.soft_targets` names -> (the output fields holding logits, the batch keys of their hard
# labels); each field's rows are distributions over:
#   "example": its classes, logits (B, C) (classification, relations)
#   "token":   its classes at every real token, logits (B, T, C) (NER)
#   "span":    the input's real tokens, logits (B, T) each (extractive QA: where the answer starts, ends)
TARGETS = {"example": (("logits",), ("labels",)), "token": (("logits",), ("labels",)),
           "span": (("start_logits", "end_logits"), ("start_positions", "end_positions"))}


def has_label_names(rows: str) -> bool:
    """Whether the classes of soft targets `rows` are the model's labels (id2label), not positions."""
    return rows != "span"


@dataclass
class DistillSettings(Settings):
    section = "distill"
    teacher: str | None = setting(None, "the fine-tuned teacher's model directory (plmkit finetune's OUT/best or "
                                        "OUT/model): its task settings, labels and tokenizer are the student's",
                                  metavar="DIR", shapes_run=False)  # (its files are compared on resume)
    init_from_teacher: bool = setting(False, "start the student from the teacher: every k-th of its layers "
                                             "(k = teacher layers / --student-layers), its embeddings and task head; "
                                             "narrower with --student-hidden/--student-heads/--student-ffn",
                                      fixed_on_resume=True)
    student_layers: int | None = setting(None, "with --init-from-teacher: the student's layers (off: half the "
                                               "teacher's); an encoder-decoder's student gets N encoder and N "
                                               "decoder layers (off: half of each)", metavar="N", at_least=1,
                                         fixed_on_resume=True)
    student_hidden: int | None = setting(None, "with --init-from-teacher: the student's width, a multiple of the "
                                               "teacher's head size: the teacher's hidden channels of the largest "
                                               "LayerNorm scales, the same in every layer (off: the teacher's "
                                               "width)", metavar="D", at_least=1, fixed_on_resume=True)
    student_heads: int | None = setting(None, "with --init-from-teacher: attention heads per layer, each layer's most "
                                              "important, of the teacher's head size (off: as many as fill the "
                                              "width)", metavar="N", at_least=1, fixed_on_resume=True)
    student_ffn: int | None = setting(None, "with --init-from-teacher: feed-forward neurons per layer, each layer's "
                                            "most important (off: the teacher's, scaled as the width)", metavar="N",
                                      at_least=1, fixed_on_resume=True)
    selection_examples: int = setting(2000, "with --student-hidden/--student-heads/--student-ffn: the first N "
                                            "training records the teacher's heads and neurons are scored on (its "
                                            "loss on the labelled ones)", metavar="N", at_least=1,
                                      fixed_on_resume=True)
    temperature: float = setting(2.0, "softmax temperature of the soft targets (their KL is scaled by T^2)",
                                 metavar="T", above=0)
    alpha: float = setting(0.5, "weight of the soft-target loss; the hard-label loss gets 1 - alpha (records "
                                "without a label: soft targets only)", metavar="A", at_least=0, at_most=1)
    hidden_weight: float = setting(0.0, "weight of the hidden-state MSE at mapped layers, through a learned "
                                        "projection when the widths differ (TinyBERT); 0: off", metavar="W", at_least=0)
    attention_weight: float = setting(0.0, "weight of the attention-distribution KL at mapped layers (TinyBERT, "
                                           "MiniLM); 0: off", metavar="W", at_least=0)

    def validate(self) -> None:
        for name in ("student_layers",) + WIDTH_FIELDS:
            self.need(getattr(self, name) is None or self.init_from_teacher,
                      f"{self._named(name)} sizes a student made from the teacher: give --init-from-teacher")

    def narrows(self) -> bool:
        """Whether the student is narrower than the teacher too (plmkit.compression.width), not only shallower."""
        return any(getattr(self, name) is not None for name in WIDTH_FIELDS)


WIDTH_FIELDS = ("student_hidden", "student_heads", "student_ffn")


def layer_map(student_layers: int, teacher_layers: int, what: str = "layers") -> list[int]:
    """The teacher layer each student layer learns from (and starts as): (i + 1) * L / N - 1, rounded up.
    `what`: the layers' name in an error ("decoder layers")."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"a student of {student_layers} {what} from a teacher of {teacher_layers}: give 1 to "
                          f"{teacher_layers} {what}")
    return [((i + 1) * teacher_layers + student_layers - 1) // student_layers - 1 for i in range(student_layers)]


def layer_stacks(model: nn.Module) -> dict[str, str]:
    """The qualified names of the model's lists of blocks (``bert.layers``, ``model.decoder.layers``) -> what
    they are: an encoder-decoder's "encoder" and "decoder", another model's one stack "body"."""
    stacks = [name for name, m in model.named_modules()
              if isinstance(m, nn.ModuleList) and name.split(".")[-1] == "layers"]
    if not getattr(model, "is_encoder_decoder", False):
        if len(stacks) != 1:
            raise ConfigError(f"{type(model).__name__}: expected one list of blocks, found {stacks or 'none'}")
        return {stacks[0]: "body"}
    decoder = model.decoder_layers()
    roles = {name: "decoder" if model.get_submodule(name) is decoder else "encoder" for name in stacks}
    if sorted(roles.values()) != ["decoder", "encoder"]:
        raise ConfigError(f"{type(model).__name__}: expected an encoder's and a decoder's list of blocks, "
                          f"found {roles}")
    return roles


def layers_in_words(model: nn.Module) -> str:
    """The model's blocks per stack, for a log line: "4", or an encoder-decoder's "6 encoder + 3 decoder"."""
    counts = {role: len(model.get_submodule(name)) for name, role in layer_stacks(model).items()}
    return str(counts["body"]) if "body" in counts else f"{counts['encoder']} encoder + {counts['decoder']} decoder"


def student_from_teacher(teacher, layers: int | None = None, **config_overrides):
    """A model of the teacher's class with `layers` of its blocks (default half), the blocks of
    `layer_map` copied, and everything outside the blocks (embeddings, pooler, task head) copied too.
    An encoder-decoder's student has `layers` encoder and `layers` decoder blocks (default half of each), each
    stack mapped on its own, as DistilBART's shrink-and-fine-tune keeps every k-th layer of both.
    A quantized (int8) teacher is refused rather than copied dequantized: its student would start from
    rounded weights where the fp32 ones they were rounded from are at hand (an int8 teacher can still
    teach a student given otherwise)."""
    if teacher.config.quantization_config is not None:
        raise ConfigError("distill: --init-from-teacher copies the teacher's weights, and this teacher is quantized "
                          "(int8): give the fp32 model it was quantized from as --teacher, or keep the int8 teacher "
                          "and give the student as --student DIR or --student-preset NAME")
    roles, kept = layer_stacks(teacher), {}  # kept: stack name -> the teacher's blocks the student keeps of it
    for name, role in roles.items():
        n = len(teacher.get_submodule(name))
        kept[name] = layer_map(layers if layers is not None else max(1, n // 2), n,
                               "layers" if role == "body" else f"{role} layers")
    config = _student_config(teacher.config, kept, roles)
    if config_overrides:
        config = config.overridden(config_overrides, "student")
    student = type(teacher)(config)
    source = teacher.state_dict()
    student.load_state_dict({key: source[_teacher_key(key, kept)] for key in student.state_dict()}, strict=True)
    return student


def _student_config(config, kept: dict[str, list[int]], roles: dict[str, str]):
    """The teacher's `config` with the blocks `kept` of each stack (`layer_stacks`' `roles`)."""
    by_role = {roles[name]: blocks for name, blocks in kept.items()}
    if "body" in by_role:
        return config.with_layers(by_role["body"])
    return config.with_layers(by_role["encoder"], by_role["decoder"])


def _teacher_key(key: str, kept: dict[str, list[int]]) -> str:
    """The teacher's name of a student's weight: block i of a stack is the teacher's kept[stack][i]."""
    for stack, blocks in kept.items():
        if key.startswith(f"{stack}."):
            index, rest = key[len(stack) + 1:].split(".", 1)
            return f"{stack}.{blocks[int(index)]}.{rest}"
    return key


@dataclass
class DistillationOutput(ModelOutput):
    loss: Tensor | None = None  # the weighted sum of the terms below
    soft: Tensor | None = None  # each loss alone (detached, for the record)
    hard: Tensor | None = None
    hidden: Tensor | None = None
    attention: Tensor | None = None
    # the weighted terms, each a mean over its own items (`DistillationModel.loss_items`)
    soft_term: Tensor | None = None
    hard_term: Tensor | None = None
    state_term: Tensor | None = None  # hidden states and attention distributions (None: both off)


class DistillationModel(nn.Module):
    """What a distillation run trains: the student, and the teacher's losses on each batch.

    The teacher is held outside the module's children (never trained, saved or counted; `.to()` moves
    it along). Checkpoints hold the student and the projection (an exact resume); `save_pretrained`
    writes the student alone, an ordinary model directory.

    Under torchrun the teacher stays outside the wrapper too: DDP neither broadcasts it nor syncs
    gradients it has none of, and FSDP leaves it whole on every rank (`called_apart` shards the
    student as its own unit, which evaluation calls alone). Whole rather than sharded because it is
    frozen: it holds its weights only (no gradients, no AdamW state: a quarter of what a trained model of
    its size holds), and sharding it would add an all-gather of each of its blocks to every step. A
    teacher too large for one device would need sharding; plmkit does not do that."""

    called_apart = ("student",)  # (training/distributed.wrap: evaluation calls the student on its own)

    def __init__(self, student: nn.Module, teacher: nn.Module, settings: DistillSettings, rows: str,
                 channels: Tensor | None = None):
        """`channels` (D_s,): the teacher's hidden channels a narrowed student kept (plmkit.compression.width):
        its hidden states are compared with the teacher's at those channels, without a projection."""
        super().__init__()
        if rows not in TARGETS:
            raise ValueError(f"rows must be one of {sorted(TARGETS)}, got {rows!r}")
        mine, theirs = student.config.row_labels, teacher.config.row_labels
        if has_label_names(rows) and mine != theirs:  # (the soft targets are compared row by row)
            raise ConfigError(f"distill: the student's labels {', '.join(mine)} are not the teacher's "
                              f"{', '.join(theirs)} (in this order): the teacher's soft targets would teach other "
                              "classes; give the student the teacher's labels in its order")
        self.student, self.settings, self.rows = student, settings, rows
        # what each term is a mean over, by which the Trainer weighs micro-batches and processes (the step's loss
        # is then that of the whole batch at any world size): the soft targets' rows (examples, or real tokens),
        # the labelled rows ("tokens": labels != -100; QA's windows: all of them, exact when all are labelled),
        # the real tokens
        self.loss_items = {"soft_term": "input_tokens" if rows == "token" else "examples",
                           "hard_term": "examples" if rows == "span" else "tokens", "state_term": "input_tokens"}
        self._teacher = [teacher.eval().requires_grad_(False)]  # a list: not a child module
        self.layers = mapped_layers(student.config.num_layers, teacher.config.num_layers, settings)
        d_student, d_teacher = student.config.d_model, teacher.config.d_model
        self.channels: Tensor | None
        self.register_buffer("channels", None if channels is None else channels.clone())  # (in checkpoints: resumes)
        self.projection = (nn.Linear(d_student, d_teacher) if settings.hidden_weight and d_student != d_teacher
                           and channels is None else None)  # (TinyBERT's W_h)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _apply(self, fn, recurse: bool = True):  # .to(), .float() ...: the teacher goes along
        self.teacher._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def save_pretrained(self, directory, state_dict: dict[str, Tensor] | None = None, **options) -> None:
        if state_dict is not None:  # (this module's names: the student's part, unprefixed)
            state_dict = {k.removeprefix("student."): v for k, v in state_dict.items() if k.startswith("student.")}
        self.student.save_pretrained(directory, state_dict=state_dict, **options)

    def forward(self, **inputs: Any) -> DistillationOutput:
        s = self.settings
        golds, real = split_labels(inputs, self.rows)  # (the hard labels: the student's losses are ours)
        asked = {**({"output_hidden_states": True} if s.hidden_weight else {}),
                 **({"output_attentions": True} if s.attention_weight else {})}
        with torch.no_grad():
            teacher = self.teacher(**inputs, **asked)
        student = self.student(**inputs, **asked)
        rows = real if self.rows == "token" else None
        classes = real if self.rows == "span" else None  # (a span's classes are the window's tokens)
        soft = torch.stack([soft_target_loss(_rows(getattr(student, name), rows), _rows(getattr(teacher, name), rows),
                                             s.temperature, classes) for name in TARGETS[self.rows][0]]).mean()
        hard = hard_loss(student, golds, self.rows, real)
        hard = hard if hard is not None else soft.new_zeros(())
        hidden = attention = state = None
        if s.hidden_weight:
            pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(self.layers)]  # (embeddings, then each block)
            kept = self.channels if self.channels is not None else slice(None)
            hidden = hidden_state_loss([student.hidden_states[i] for i, _ in pairs],
                                       [teacher.hidden_states[t][..., kept] for _, t in pairs], real, self.projection)
            state = s.hidden_weight * hidden
        if s.attention_weight:
            attention = attention_loss(list(student.attentions), [teacher.attentions[t] for t in self.layers], real)
            state = s.attention_weight * attention + (state if state is not None else 0.0)
        terms = (s.alpha * soft, (1 - s.alpha) * hard, state)
        return DistillationOutput(sum(t for t in terms if t is not None), soft.detach(), hard.detach(),
                                  None if hidden is None else hidden.detach(),
                                  None if attention is None else attention.detach(), *terms)


def mapped_layers(student_layers: int, teacher_layers: int, settings: DistillSettings) -> list[int] | None:
    """The teacher layer each student layer's hidden states and attention learn from (`layer_map`); None
    when neither loss is on (the logits alone: any student depth will do)."""
    on = [flag for flag, weight in (("--hidden-weight", settings.hidden_weight),
                                    ("--attention-weight", settings.attention_weight)) if weight]
    if not on:
        return None
    if student_layers > teacher_layers:
        raise ConfigError(f"distill: {' and '.join(on)} compare each student layer with a teacher layer, and this "
                          f"student has {student_layers} layers, its teacher {teacher_layers}: give a student of at "
                          f"most {teacher_layers} layers, or leave {' and '.join(on)} off (logits alone)")
    return layer_map(student_layers, teacher_layers)


def split_labels(inputs: dict[str, Any], rows: str) -> tuple[list[Tensor | None], Tensor]:
    """Takes the hard labels of soft targets `rows` out of a batch `inputs` (in place); returns them (None:
    not in the batch) and the real tokens (B, T)."""
    golds = [inputs.pop(key, None) for key in TARGETS[rows][1]]
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    return golds, mask.bool() if mask is not None else torch.ones(ids.shape, dtype=torch.bool, device=ids.device)


def hard_loss(outputs: ModelOutput, golds: list[Tensor | None], rows: str, real: Tensor) -> Tensor | None:
    """The mean over the fields of TARGETS[rows] of `hard_label_loss` on `outputs` (per token: at the real
    tokens `real` (B, T); a span's positions: among the real tokens); None when the batch lacks a field's labels."""
    picked = real if rows == "token" else None
    if any(gold is None for gold in golds):
        return None
    logits = [getattr(outputs, name) for name in TARGETS[rows][0]]
    if rows == "span":  # (B, T) logits over positions; the model's own loss also counts padding, as HF's does
        logits = [x.float().masked_fill(~real, torch.finfo(torch.float32).min) for x in logits]
    return torch.stack([hard_label_loss(_rows(x, picked), _rows(gold, picked)) for x, gold in zip(logits, golds)]).mean()


def _rows(x: Tensor, real: Tensor | None) -> Tensor:
    """Per-example values (B, ...) as they are; per-token ones (B, T, ...) at the real tokens: (N, ...)."""
    return x if real is None else x[real]


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                     classes: Tensor | None = None) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T², the mean over rows; logits (N, C).
    `classes` (N, C): the classes each row's distributions are over (a QA window's real tokens); the
    others get probability 0 on both sides and add nothing, whatever their logits."""
    t = temperature
    student, teacher = student_logits.float() / t, teacher_logits.float() / t
    if classes is not None:
        lowest = torch.finfo(torch.float32).min  # (not -inf: 0 * (-inf - -inf) would be NaN)
        student, teacher = student.masked_fill(~classes, lowest), teacher.masked_fill(~classes, lowest)
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                    reduction="batchmean") * (t * t)


def hard_label_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the labelled rows (label != -100); zero, in the graph, when none is labelled."""
    labelled = labels != IGNORE_INDEX  # (N,)
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled].float(), labels[labelled])


def hidden_state_loss(student: list[Tensor], teacher: list[Tensor], real: Tensor,
                      projection: nn.Module | None) -> Tensor:
    """The mean over layer pairs of the MSE between (projected) student states and teacher states
    (B, T, D_s) / (B, T, D_t), over the real tokens `real` (B, T)."""
    losses = []
    for h_s, h_t in zip(student, teacher):
        h_s = h_s[real].float()  # (N, D_s)
        losses.append(F.mse_loss(projection(h_s) if projection is not None else h_s, h_t[real].float()))
    return torch.stack(losses).mean()


def attention_loss(student: list[Tensor], teacher: list[Tensor], real: Tensor) -> Tensor:
    """The mean over layer pairs of KL(teacher || student) of the attention distributions (B, H, T, T)
    over the real query tokens `real` (B, T) (padding keys have probability 0 on both sides); heads
    averaged when the two have different counts."""
    losses = []
    for p_s, p_t in zip(student, teacher):
        if p_s.shape[1] != p_t.shape[1]:
            p_s, p_t = p_s.mean(1, keepdim=True), p_t.mean(1, keepdim=True)
        p_s, p_t = p_s.float().transpose(1, 2)[real], p_t.float().transpose(1, 2)[real]  # (N, H, T_k)
        kl = torch.xlogy(p_t, p_t) - p_t * p_s.clamp_min(torch.finfo(torch.float32).tiny).log()
        losses.append(kl.sum(-1).mean())
    return torch.stack(losses).mean()


__all__ = ["DistillSettings", "DistillationModel", "DistillationOutput", "TARGETS", "WIDTH_FIELDS", "attention_loss",
           "hard_label_loss", "hard_loss", "has_label_names", "hidden_state_loss", "layer_map",
           "layer_stacks", "layers_in_words", "mapped_layers", "soft_target_loss", "split_labels",
           "student_from_teacher"]
