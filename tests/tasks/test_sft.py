"""tasks/sft.py: SFT examples (loss on the replies only), the pad token, and `plmkit finetune --task sft` end to end."""
import json
import math
import subprocess
import sys

import pytest
import torch

from clm_helpers import PAIRS, corpus_text, pretrain_tiny_gpt, tiny_tokenizer
from plmkit.chat import encode_text
from plmkit.errors import ConfigError, DataError
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.recipes.finetune import finetune
from plmkit.tasks.sft import SFTCollator, SFTDataset, ensure_pad_token, read_pairs
from plmkit.utils.constants import IGNORE_INDEX


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_sft_labels_cover_only_the_response(tok):
    data = SFTDataset([("hello", "hi there")], tok, max_length=64)
    ex = data[0]
    prompt_ids = encode_text(tok, "<|user|>\nhello\n<|assistant|>\n")
    reply_ids = encode_text(tok, "hi there") + [tok.eos_token_id]
    assert ex["input_ids"] == prompt_ids + reply_ids
    assert ex["labels"] == [IGNORE_INDEX] * len(prompt_ids) + reply_ids
    assert tok.decode(ex["input_ids"]) == "<|user|>\nhello\n<|assistant|>\nhi there<|endoftext|>"


def test_loss_depends_only_on_the_response(tok):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tok), n_positions=64,
                                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    pad = ensure_pad_token(tok, model)
    collate = SFTCollator(pad)
    data = SFTDataset([("hello", "hi there"), ("a much longer question here", "ok")], tok, 64)
    batch = collate([data[0], data[1]])
    assert batch["input_ids"].shape[0] == 2 and (batch["input_ids"][batch["attention_mask"] == 0] == pad).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    loss = model(**batch).loss
    # the loss equals a hand-computed mean over response tokens (+ eos) only
    logits = model(batch["input_ids"], batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])
    torch.testing.assert_close(loss, manual)
    n_reply = len(encode_text(tok, "hi there")) + 1 + len(encode_text(tok, "ok")) + 1
    assert int(keep.sum()) == n_reply


def test_pad_token_is_added_not_eos():
    from clm_helpers import corpus_text
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.train_bpe([corpus_text()], 300)
    assert tok.pad_token_id is None
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tok), n_positions=32))
    before = len(tok)
    pad = ensure_pad_token(tok, model)
    assert pad != tok.eos_token_id and tok.pad_token == "<|pad|>" and len(tok) == before + 1
    assert model.get_input_embeddings().num_embeddings == len(tok) and model.config.pad_token_id == pad


def test_long_examples_are_cut_or_skipped(tok):
    data = SFTDataset([("hi", "word " * 100), ("word " * 100, "x"), ("hi", "short")], tok, max_length=40)
    assert len(data) == 2 and data.skipped == 1 and data.truncated == 1 and len(data[0]["input_ids"]) == 40


def test_jsonl_errors_name_file_and_line(tmp_path):
    good = {"prompt": "hi", "response": "hello"}
    cases = [("{bad json", "not valid JSON"), (json.dumps({"prompt": "hi"}), "no 'response' field"),
             (json.dumps({"prompt": 3, "response": "x"}), "'prompt' must be a string, got int 3"), ("[1, 2]", "JSON object"),
             (json.dumps({"prompt": "hi", "response": ""}), "'response' is empty"),  # only EOS to learn
             (json.dumps({"prompt": " ", "response": "x"}), "'prompt' is empty"),  # chat never sends one
             (json.dumps({"prompt": "hi", "response": "x", "system": 5}), "'system' must be a string, got int 5")]
    for text, message in cases:
        path = tmp_path / "d.jsonl"
        path.write_text(json.dumps(good) + "\n\n" + text + "\n")
        with pytest.raises(DataError, match=f"d.jsonl:3:.*{message}"):
            list(read_pairs(path))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clm")
    return root, pretrain_tiny_gpt(root)


def test_sft_trains_on_dialogue_pairs(pretrained, tmp_path):
    _, result = pretrained
    data = tmp_path / "dialogue.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS * 3))
    sft = finetune("sft", result.model_dir, data, tmp_path / "sft", batch_size=4, max_steps=15, lr=3e-3,
                   eval_fraction=0.2, progress_bar=False)
    assert sft.train_examples == 14 and sft.eval_examples == 4 and math.isfinite(sft.eval_metrics["eval_perplexity"])
    assert sft.best_dir is None  # no best checkpoint unless a metric is asked for
    records = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.from_pretrained(sft.model_dir)
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    run = subprocess.run([sys.executable, "-m", "plmkit.cli", "chat", "--model", str(sft.model_dir),
                          "--max-new-tokens", "8", "--greedy"], input="hello\n", capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1 and "<|" not in run.stdout


def test_bad_inputs_are_clear_errors(pretrained, tmp_path):
    _, result = pretrained
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        finetune("sft", result.model_dir, bad, tmp_path / "sft", max_steps=1)
    with pytest.raises(ConfigError, match=r"eval_fraction \(--eval-fraction\) must be in \[0, 1\)"):
        finetune("sft", result.model_dir, bad, tmp_path / "sft", max_steps=1, eval_fraction=1.5)
    one = tmp_path / "one.jsonl"
    one.write_text('{"prompt": "hi", "response": "hello"}\n')
    with pytest.raises(DataError, match="too few to hold out 1"):
        finetune("sft", result.model_dir, one, tmp_path / "sft", max_steps=1)
    with pytest.raises(ConfigError, match="exceeds the model's context window"):
        finetune("sft", result.model_dir, one, tmp_path / "sft", max_steps=1, eval_fraction=0.0, max_length=10_000)


def test_evaluate_a_pretrained_decoder_without_task_file_on_dialogue(pretrained, tmp_path):
    from plmkit.tasks import evaluate_dir
    _, result = pretrained  # a pretraining output: config.json names a causal LM, no plmkit_task.json
    data = tmp_path / "dialogue.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS))
    metrics = evaluate_dir(result.model_dir, data, device="cpu")  # examples up to the context window
    assert math.isfinite(metrics["perplexity"]) and metrics["tokens"] > 0


def test_evaluation_where_every_prompt_is_too_long_names_the_file(pretrained, tmp_path):
    from plmkit.tasks import evaluate_dir
    _, result = pretrained
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"prompt": "word " * 500, "response": "x"}) + "\n")
    with pytest.raises(DataError, match=r"long.jsonl: every held-out prompt is longer than max_length=\d+ tokens"):
        evaluate_dir(result.model_dir, data, device="cpu")


def test_predict_with_a_chat_model_points_to_generate_and_chat(pretrained, tmp_path, capsys):
    from plmkit.cli import main
    _, result = pretrained
    (tmp_path / "in.jsonl").write_text('{"prompt": "hello"}\n')
    assert main(["predict", "--model", str(result.model_dir), "--input", str(tmp_path / "in.jsonl")]) == 2
    assert "a causal LM answers with plmkit generate --input FILE, or plmkit chat" in capsys.readouterr().err


def test_finetune_cli_task_sft(pretrained, tmp_path, capsys):
    from plmkit.cli import main
    _, result = pretrained
    train, held = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS))
    held.write_text(json.dumps({"prompt": "hello", "response": "hi there"}) + "\n")
    args = ["finetune", "--task", "sft", "--model", str(result.model_dir), "--train", str(train), "--eval",
            str(held), "--out", str(tmp_path / "out"), "--max-steps", "3", "--lr", "1e-3", "--batch-size", "3",
            "--no-progress"]
    assert main(args) == 0
    assert "held-out perplexity" in capsys.readouterr().out
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    # without --max-length an example may fill the model's context window (not the classifiers' 128)
    window = json.loads((result.model_dir / "config.json").read_text())["n_positions"]
    assert json.loads((tmp_path / "out" / "model" / "plmkit_task.json").read_text())["max_length"] == window
    args[args.index("--out") + 1] = str(tmp_path / "out2")
    assert main(args + ["--max-length", "32"]) == 0
    assert json.loads((tmp_path / "out2" / "model" / "plmkit_task.json").read_text())["max_length"] == 32


def rough_teacher(tokenizer, seed: int = 3):
    """A tiny random GPT-2 with weights far from their start: its replies run long (no early end of text)."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tokenizer), n_positions=64,
                                                   eos_token_id=tokenizer.eos_token_id)).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


PROMPTS = [{"prompt": p} for p in ("hi", "what is a cat that sits on the mat all day long", "say a word",
                                   "hello there")]


def alone(task, teacher, tok, record) -> str:
    """The teacher's greedy reply to one prompt, generated alone up to max_length with its prompt."""
    from plmkit.chat import format_system, format_user
    ids = torch.tensor(encode_text(tok, format_system(None) + format_user(record["prompt"])))
    new = teacher.generate(ids, max_new_tokens=task.settings.max_length - len(ids), eos_token_id=tok.eos_token_id,
                           do_sample=False, num_beams=1)[len(ids):]
    return tok.decode(new.tolist(), skip_special_tokens=True).strip()


@pytest.mark.filterwarnings("ignore:top_p=0.95 only apply when sampling")  # (but in the first call: caught there)
def test_teacher_replies_are_greedy_whatever_the_teacher_s_generation_config_says(tok):
    from plmkit.tasks.sft import SFTTask
    teacher, task = rough_teacher(tok), SFTTask.of(max_length=48)
    task.progress = False
    teacher.generation_config = {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "num_beams": 2}  # a chat model's
    with pytest.warns(UserWarning, match="only apply when sampling"):  # (top_p: ignored by greedy decoding)
        first = task.teacher_targets(teacher, tok, PROMPTS, batch_size=2)
    assert first == task.teacher_targets(teacher, tok, PROMPTS, batch_size=2)
    assert [r["response"] for r in first] == [alone(task, teacher, tok, r) for r in PROMPTS]


def test_each_teacher_reply_has_its_own_prompt_s_room_whatever_shares_its_batch(tok):
    from plmkit.tasks.sft import SFTTask
    teacher, task = rough_teacher(tok), SFTTask.of(max_length=48)
    task.progress = False
    replies = [[r["response"] for r in task.teacher_targets(teacher, tok, PROMPTS, batch_size=size)] for size in (1, 4)]
    assert replies[0] == replies[1] == [alone(task, teacher, tok, r) for r in PROMPTS]
    assert len(replies[0][0]) > len(replies[0][1])  # (the shortest prompt's reply runs past the longest's room)


def test_teacher_replies_of_a_tokenizer_without_a_pad_token_pad_with_its_eos_and_leave_it_unchanged():
    from plmkit.tasks.sft import SFTTask, prompt_pad_id
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.train_bpe([corpus_text(), "<|user|>\nhello\n<|assistant|>\nhi there"], 400,
                              special_tokens=("<|endoftext|>",), model_max_length=128)
    assert tok.pad_token_id is None
    teacher, task = rough_teacher(tok), SFTTask.of(max_length=48)
    task.progress = False
    assert prompt_pad_id(tok, teacher) == tok.eos_token_id
    written = task.teacher_targets(teacher, tok, PROMPTS, batch_size=4)  # (a pad id beyond the embeddings: refused)
    assert tok.pad_token_id is None and len(tok) == teacher.get_input_embeddings().num_embeddings
    assert [r["response"] for r in written] == [alone(task, teacher, tok, r) for r in PROMPTS]


def test_reply_batches_keep_a_batch_s_prompts_within_the_spread_the_positions_leave():
    from plmkit.tasks.sft import reply_batches
    lengths = [9, 3, 5, 3, 20, 6]
    assert reply_batches(lengths, 4, None) == [[1, 3, 2, 5], [0, 4]]
    assert reply_batches(lengths, 4, 2) == [[1, 3, 2], [5], [0], [4]]
    assert reply_batches(lengths, 4, 0) == [[1, 3], [2], [5], [0], [4]]
    assert reply_batches([], 4, 0) == []
