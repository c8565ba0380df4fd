"""End to end: pretrain a tiny GPT on a small English text, generate from it with the CLI (SFT: tests/tasks/test_sft.py)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clm_helpers import clm_run, corpus_text, pretrain_tiny_gpt, tiny_tokenizer  # noqa: E402
from plmkit.errors import ConfigError, DataError
from plmkit.recipes.pretrain import run
from plmkit.training.clm import _tokenizer, format_result

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clm")
    return root, pretrain_tiny_gpt(root)


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


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        run(clm_run(tmp_path / "missing.txt", tmp_path / "run", max_steps=1))
    with pytest.raises(ConfigError):
        clm_run(tmp_path, tmp_path / "run", eval_fraction=1.5, max_steps=1)
    with pytest.raises(DataError, match="no such file"):  # warmup_steps replaces the default warmup_ratio
        run(clm_run(tmp_path / "missing.txt", tmp_path / "run", max_steps=1, warmup_steps=5))


def test_a_vocab_size_the_tokenizer_does_not_have_is_named(tmp_path, caplog):
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    for path, out, vocab_size, expected in [(tmp_path / "tok", tmp_path / "o1", None, []),
                                            (tmp_path / "tok", tmp_path / "o1", len(tok), []),
                                            (tmp_path / "tok", tmp_path / "o1", 500, ["vocab_size 500 is ignored"])]:
        caplog.clear()
        with caplog.at_level("INFO", logger="plmkit"):
            _tokenizer(path, [], vocab_size, 64, out)
        assert [line[:25] for line in caplog.messages] == expected
    tok.save_pretrained(tmp_path / "o2" / "tokenizer")
    with caplog.at_level("INFO", logger="plmkit"):
        _tokenizer(None, [], 500, 64, tmp_path / "o2")
    assert "vocab_size 500 is ignored" in caplog.messages[-1] and "a run keeps the tokenizer" in caplog.messages[-1]
    assert caplog.records[-1].levelname == "WARNING"


def test_plmkit_pretrain_objective_clm(tmp_path, capsys):
    from plmkit.cli import main
    (tmp_path / "c.txt").write_text(corpus_text(2))
    base = ["pretrain", "--objective", "clm", "--corpus", str(tmp_path / "c.txt"), "--out", str(tmp_path / "o"),
            "--max-steps", "2"]
    assert main(base + ["--preset", "bert-mini"]) == 2
    assert "decoder" in capsys.readouterr().err
    assert main(base + ["--mask-rate", "0.2"]) == 2
    assert "--mask-rate" in capsys.readouterr().err
    assert main(base + ["--vocab-size", "300", "--seq-len", "32", "--batch-size", "4", "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--eval-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "held-out perplexity" in out and (tmp_path / "o" / "model" / "config.json").is_file()
    assert any((tmp_path / "o" / "checkpoints").iterdir())  # saved by default, so --resume has a start


def test_a_bounded_evaluation_measures_a_seeded_sample_of_every_held_out_block(tmp_path, monkeypatch):
    """eval_batches x batch_size blocks of many more held-out ones: drawn from the whole split (not its first
    documents in corpus order), the same ones on every evaluation and in every run of the same seed."""
    from clm_helpers import PARAGRAPHS
    from plmkit.training import clm
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in "abcd":
        (corpus / f"{name}.txt").write_text("\n\n".join(f"{name} document {i}. " + PARAGRAPHS[i % 6]
                                                        for i in range(40)) + "\n")
    evaluated, measure = [], clm.evaluate_perplexity

    def recording(model, dataset, batch_size, max_batches, *args, **kwargs):
        held_out = getattr(dataset, "blocks", dataset)  # every held-out block, in corpus order
        blocks = [held_out[i]["input_ids"].tobytes() for i in range(len(held_out))]
        evaluated.append(([blocks.index(dataset[i]["input_ids"].tobytes())
                           for i in range(min(len(dataset), max_batches * batch_size))], len(blocks)))
        return measure(model, dataset, batch_size, max_batches, *args, **kwargs)

    monkeypatch.setattr(clm, "evaluate_perplexity", recording)
    settings = dict(vocab_size=300, seq_len=32, batch_size=4, eval_batches=1, eval_fraction=0.2, max_steps=2,
                    eval_every=1, progress_bar=False, cache_dir=tmp_path / "cache")
    run(clm_run(corpus, tmp_path / "run", **settings))
    (first, held_out), *others = evaluated
    assert held_out > 10 * len(first) and len(set(first)) == len(first) == 4
    assert max(first) >= held_out // 2  # not the first blocks alone: the end of the split too
    assert all(blocks == first for blocks, _ in others)  # the same blocks at every evaluation
    run(clm_run(corpus, tmp_path / "again", **settings, tokenizer=tmp_path / "run" / "tokenizer"))
    assert evaluated[-1][0] == first
