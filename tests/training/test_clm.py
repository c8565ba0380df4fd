"""End to end: pretrain a tiny GPT on a small English text, generate from it with the CLI, SFT it."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clm_helpers import corpus_text, tiny_tokenizer  # noqa: E402
from plmkit.errors import ConfigError, DataError
from plmkit.training.clm import _tokenizer, format_result, run_clm_pretraining
from plmkit.training.sft import run_sft

PAIRS = [("hello", "hi there"), ("how are you?", "I am well, thank you."),
         ("what is your name?", "I am a small model."),
         ("good morning", "good morning to you"), ("bye", "goodbye!"), ("thanks", "you are welcome")]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clm")
    (root / "corpus.txt").write_text(corpus_text())
    result = run_clm_pretraining(root / "corpus.txt", root / "run", vocab_size=400, preset="gpt2-tiny", seq_len=64,
                                 batch_size=8, max_steps=40, lr=3e-3, eval_every=20, eval_fraction=0.15,
                                 progress_bar=False, cache_dir=root / "cache", log=lambda *_: None)
    return root, result


def test_pretraining_learns_and_reports_perplexity(pretrained):
    root, result = pretrained
    records = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    ppl = [r["eval_perplexity"] for r in records if "eval_perplexity" in r]
    assert len(ppl) == 2 and ppl[-1] < ppl[0] < 400 and result.perplexity == ppl[-1]
    assert result.perplexity < 60  # far below a uniform guess over 400 tokens
    assert "held-out perplexity" in format_result(result)
    names = {p.name for p in result.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


def test_model_dir_loads_in_transformers(pretrained):
    transformers = pytest.importorskip("transformers")
    from plmkit.models.auto import AutoModelForCausalLM
    _, result = pretrained
    ours = AutoModelForCausalLM.from_pretrained(result.model_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(result.model_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(result.model_dir)
    ids = torch.tensor([hf_tok.encode("The old sailor walked")])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_generate_cli_from_the_pretrained_model(pretrained):
    _, result = pretrained
    run = subprocess.run([sys.executable, "-m", "plmkit.cli", "generate", "--model", str(result.model_dir),
                          "--prompt", "The old sailor", "--max-new-tokens", "12", "--greedy"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("The old sailor") and len(run.stdout.strip()) > len("The old sailor")


def test_sft_trains_on_dialogue_pairs(pretrained, tmp_path):
    _, result = pretrained
    data = tmp_path / "dialogue.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS * 3))
    sft = run_sft(result.model_dir, data, tmp_path / "sft", batch_size=4, max_steps=15, lr=3e-3, eval_fraction=0.2,
                  progress_bar=False, log=lambda *_: None)
    assert sft.train_examples == 14 and sft.eval_examples == 4 and math.isfinite(sft.perplexity)
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


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        run_clm_pretraining(tmp_path / "missing.txt", tmp_path / "run", max_steps=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        run_sft(tmp_path, bad, tmp_path / "sft", max_steps=1)
    with pytest.raises(ConfigError):
        run_clm_pretraining(tmp_path, tmp_path / "run", eval_fraction=1.5, max_steps=1)
    with pytest.raises(DataError, match="no such file"):  # warmup_steps replaces the default warmup_ratio
        run_clm_pretraining(tmp_path / "missing.txt", tmp_path / "run", max_steps=1, warmup_steps=5)


def test_a_vocab_size_the_tokenizer_does_not_have_is_named(tmp_path):
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    for path, out, vocab_size, expected in [(tmp_path / "tok", tmp_path / "o1", None, []),
                                            (tmp_path / "tok", tmp_path / "o1", len(tok), []),
                                            (tmp_path / "tok", tmp_path / "o1", 500, ["vocab_size 500 is ignored"])]:
        lines = []
        _tokenizer(path, [], vocab_size, 64, out, lines.append)
        assert [line[:25] for line in lines] == expected
    tok.save_pretrained(tmp_path / "o2" / "tokenizer")
    lines = []
    _tokenizer(None, [], 500, 64, tmp_path / "o2", lines.append)
    assert "vocab_size 500 is ignored" in lines[-1] and "delete it" in lines[-1]


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
    assert json.loads((tmp_path / "out" / "sft_config.json").read_text())["max_length"] == window
    args[args.index("--out") + 1] = str(tmp_path / "out2")
    assert main(args + ["--max-length", "32"]) == 0
    assert json.loads((tmp_path / "out2" / "sft_config.json").read_text())["max_length"] == 32


def test_plmkit_pretrain_objective_clm(tmp_path, capsys):
    from plmkit.cli import main
    (tmp_path / "c.txt").write_text(corpus_text(2))
    base = ["pretrain", "--objective", "clm", "--corpus", str(tmp_path / "c.txt"), "--out", str(tmp_path / "o")]
    assert main(base + ["--preset", "bert-mini"]) == 2
    assert "decoder" in capsys.readouterr().err
    assert main(base + ["--mask-rate", "0.2"]) == 2
    assert "--mask-rate" in capsys.readouterr().err
    assert main(base + ["--vocab-size", "300", "--seq-len", "32", "--batch-size", "4", "--max-steps", "2",
                        "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--eval-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "held-out perplexity" in out and (tmp_path / "o" / "model" / "config.json").is_file()
    assert any((tmp_path / "o" / "checkpoints").iterdir())  # saved by default, so --resume has a start
