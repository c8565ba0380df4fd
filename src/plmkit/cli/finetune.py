"""`plmkit finetune --task classification|ner|relation|qa --model DIR --train FILE [--eval FILE] --out DIR`."""
from __future__ import annotations

import argparse

from plmkit import tasks


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a model for classification, NER, relation extraction or QA",
        description="Fine-tune a pretrained model directory. Writes OUT/model (final), OUT/best (best by the "
                    "eval metric, with --eval), metrics.jsonl and training_curves.png. Model directories carry "
                    "the tokenizer, the labels and plmkit_task.json, so `plmkit evaluate/predict` need nothing else.")
    p.add_argument("--task", required=True, choices=tasks.TASKS + ("sft",),
                   help="sft: causal LM on prompt/response JSONL with the chat template (plmkit.training.sft)")
    p.add_argument("--model", required=True, help="pretrained model directory (config.json, weights, tokenizer)")
    p.add_argument("--train", required=True, help="training data: JSONL/CSV/TSV (classification), CoNLL (ner), "
                                                  "JSONL (relation), SQuAD JSON (qa)")
    p.add_argument("--eval", default=None, help="evaluation data, same format (evaluated every epoch)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per input (QA, long NER sentences: per window); default 128, sft: the context window")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--schedule", choices=("linear", "cosine", "constant"), default="linear")
    p.add_argument("--grad-clip", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step")
    p.add_argument("--dropout", type=float, default=None, metavar="P",
                   help="hidden and attention dropout while fine-tuning (default: the model's config; "
                        "plmkit pretrain writes 0, fine-tuning usually wants 0.1)")
    p.add_argument("--freeze-embeddings", action="store_true")
    p.add_argument("--freeze-layers", type=int, default=0, metavar="K", help="freeze the embeddings and the first K layers")
    p.add_argument("--freeze-body", action="store_true", help="train the task head only")
    p.add_argument("--layer-lr-decay", type=float, default=None, help="layer i gets lr * d**(L - i)")
    p.add_argument("--head-lr", type=float, default=None, help="learning rate of the task head")
    p.add_argument("--lora-rank", type=int, default=None, help="train LoRA adapters of this rank (+ the head)")
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--lora-targets", default="q,v", help="comma-separated Linear names (q,k,v,out,fc_in,fc_out)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (default: every epoch)")
    p.add_argument("--early-stopping-patience", type=int, default=None)
    p.add_argument("--metric", default=None, help="metric choosing the best checkpoint (default: the task's main one)")
    p.add_argument("--doc-stride", type=int, default=128, help="QA: token overlap of consecutive windows")
    p.add_argument("--max-answer-length", type=int, default=30, help="QA: longest answer, in tokens")
    p.add_argument("--stride", type=int, default=None, help="NER: word pieces shared by consecutive windows of a "
                   "sentence longer than --max-length (default: max length / 4)")
    p.add_argument("--group-by-length", action="store_true",
                   help="batches of similar lengths: less attention padding (the encoder already skips "
                        "padding tokens elsewhere, so this saves little)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--save-every", type=int, default=None, metavar="N",
                   help="checkpoint every N steps (one is always written at the end)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest, exactly")
    p.add_argument("--log-every", type=int, default=10, metavar="N", help="log the loss every N steps (default 10)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "sft":
        return run_sft(args)
    options = tasks.FinetuneOptions(
        epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size,
        max_length=args.max_length or 128, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        schedule=args.schedule, grad_clip=args.grad_clip, grad_accum_steps=args.grad_accum,
        dropout=args.dropout, freeze_embeddings=args.freeze_embeddings, freeze_layers=args.freeze_layers, freeze_body=args.freeze_body,
        layer_lr_decay=args.layer_lr_decay, head_lr=args.head_lr, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
        eval_every=args.eval_every, early_stopping_patience=args.early_stopping_patience,
        metric_for_best=args.metric, seed=args.seed, device=args.device, precision=args.precision,
        group_by_length=args.group_by_length, doc_stride=args.doc_stride,
        max_answer_length=args.max_answer_length, stride=args.stride,
        progress_bar=not args.no_progress, save_every=args.save_every, resume=args.resume, log_every=args.log_every)
    tasks.finetune(args.task, args.model, args.train, args.out, args.eval, options)
    return 0


def run_sft(args: argparse.Namespace) -> int:
    from plmkit.training.sft import run_sft as sft

    result = sft(args.model, args.train, args.out, eval_data=args.eval, max_length=args.max_length,
                 batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
                 weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, schedule=args.schedule,
                 grad_clip=args.grad_clip, grad_accum_steps=args.grad_accum, eval_every=args.eval_every,
                 seed=args.seed, device=args.device, precision=args.precision, progress_bar=not args.no_progress,
                 save_every=args.save_every, resume=args.resume, log_every=args.log_every)
    ppl = f", held-out perplexity {result.perplexity:.2f}" if result.perplexity is not None else ""
    print(f"SFT done: {result.train_examples} examples{ppl}; chat with: plmkit chat --model {result.model_dir}")
    return 0
