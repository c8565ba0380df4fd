"""End to end: `plmkit pretrain --objective denoise` (BART's text infilling and sentence permutation) on a
small English text: the held-out reconstruction loss, Hugging Face loading, exact resume, refused inputs."""
import pytest
import torch

from clm_helpers import corpus_text
from plmkit.cli import main
from plmkit.errors import ConfigError
from plmkit.tokenization import Tokenizer
from pretrain_helpers import check_resume_is_exact, logged, read_metrics


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A corpus and one BART-style tokenizer for every run (BPE training breaks ties differently run to run)."""
    root = tmp_path_factory.mktemp("denoise")
    (root / "c.txt").write_text(corpus_text())
    Tokenizer.train([corpus_text()], 300, model="byte-bpe", style="bart").save_pretrained(root / "tok")
    return root


def args(root, out, *extra):
    return ["pretrain", "--objective", "denoise", "--corpus", str(root / "c.txt"), "--out", str(out),
            "--seq-len", "64", "--batch-size", "4", "--eval-fraction", "0.2", "--eval-batches", "2",
            "--cache-dir", str(root / "cache"), "--no-progress", "--log-every", "1", *extra]


def test_a_run_reports_the_held_out_reconstruction_loss_and_hf_loads_its_model(root, capsys):
    transformers = pytest.importorskip("transformers")
    out = root / "run"
    assert main(args(root, out, "--vocab-size", "300", "--max-steps", "8", "--eval-every", "4", "--lr", "3e-3")) == 0
    printed = capsys.readouterr()
    assert "training a byte-level BPE tokenizer in BART's style (vocab 300)" in printed.err
    evals = [r for r in read_metrics(out) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8] and evals[1]["eval_loss"] < evals[0]["eval_loss"]
    assert f"held-out reconstruction loss {evals[1]['eval_loss']:.4f}" in printed.out
    assert "denoising pretraining done: 8 steps" in printed.out

    # transformers loads the model and its tokenizer, and computes our loss on a noised batch
    from plmkit.data.denoising import DenoisingCollator
    from plmkit.models.bart import BartForConditionalGeneration
    model_dir = out / "model"
    ours, tok = BartForConditionalGeneration.from_pretrained(model_dir).eval(), Tokenizer.from_pretrained(model_dir)
    hf = transformers.BartForConditionalGeneration.from_pretrained(model_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    text = "The old sailor walked down to the harbour.\nHe counted the gulls."
    assert hf_tok(text)["input_ids"] == tok.encode(text) and hf_tok.mask_token_id == tok.mask_token_id == 4
    batch = DenoisingCollator(tok, generator=torch.Generator().manual_seed(0))(
        [{"input_ids": tok.encode(t, add_special_tokens=False)} for t in (text, "Rain fell on the town.")])
    with torch.no_grad():
        mine, theirs = ours(**batch), hf(**batch)
    torch.testing.assert_close(mine.loss, theirs.loss, atol=1e-5, rtol=0)
    real = batch["labels"] != -100
    torch.testing.assert_close(mine.logits[real], theirs.logits[real], atol=1e-4, rtol=0)
    assert mine.loss < 5.0  # learned something: a uniform guess over 300 tokens is ln 300 = 5.7


def test_resume_is_exact_noise_included(root, capsys):
    run_file = root / "run.yaml"
    run_file.write_text("train:\n  schedule: constant\n  warmup_ratio: 0.0\n  seed: 3\nmodel:\n  dropout: 0.1\n")
    flags = ("--config", str(run_file), "--eval-every", "2", "--tokenizer", str(root / "tok"))
    check_resume_is_exact(lambda out, *more: main(args(root, out, *more)), root, *flags)  # noise and dropout go on
    evals = logged(root / "straight", "eval_loss")
    assert [step for step, _ in evals] == [2, 4, 6]
    assert [e for e in logged(root / "resumed", "eval_loss") if e[0] != 3] == evals  # (3: the first part's end)
    capsys.readouterr()
    for changed, named in ((("--poisson-lambda", "2"), "data.poisson_lambda"), (("--preset", "bart-small"), "model.")):
        assert main(args(root, root / "resumed", "--max-steps", "8", "--resume", *changed, *flags)) == 2
        assert named in capsys.readouterr().err  # another noise or model is refused


def test_the_held_out_noise_is_fixed_and_leaves_the_global_rng_alone(root):
    from plmkit.data.denoising import DenoisingCollator
    from plmkit.data.shards import build_token_shards
    from plmkit.recipes.pretrain import PretrainRun
    from plmkit.training.denoise import build_datasets, build_model, make_evaluator
    config = PretrainRun.build({"data": {"objective": "denoise", "corpus": [str(root / "c.txt")], "seq_len": 64,
                                         "batch_size": 4, "eval_fraction": 0.2}, "train": {"max_steps": 1}})
    tok = Tokenizer.from_pretrained(root / "tok")
    shards = build_token_shards(config.data.corpus, tok, root / "cache", whole_documents=True)
    _, held_out = build_datasets(shards, tok, config.data, seed=0)
    torch.manual_seed(0)
    model = build_model(config.model, tok).eval()

    def collator(generator):
        return DenoisingCollator(tok, generator=generator)

    evaluate = make_evaluator(held_out, collator, config.data, seed=0)
    state = torch.get_rng_state()
    with torch.no_grad():
        first, again = evaluate(model), evaluate(model)
        other = make_evaluator(held_out, collator, config.data, seed=1)(model)
    assert first == again and first["loss"] != other["loss"] and torch.equal(torch.get_rng_state(), state)
    assert first["tokens"] == sum(len(held_out[i]["input_ids"]) + 2 for i in range(min(len(held_out), 20 * 4)))


def test_a_tokenizer_without_barts_special_tokens_is_refused_before_any_work(root, capsys):
    Tokenizer.train_bpe([corpus_text()], 300).save_pretrained(root / "gpt2-tok")  # <|endoftext|> only
    out = root / "refused"
    assert main(args(root, out, "--max-steps", "1", "--tokenizer", str(root / "gpt2-tok"),
                     "--cache-dir", str(root / "refused-cache"))) == 2
    err = capsys.readouterr().err
    assert "gpt2-tok has no <pad>, <mask> token(s), which denoising needs" in err and "--style bart" in err
    assert not (root / "refused-cache").exists()


def test_settings_denoising_does_not_read_are_refused_by_name(root, capsys):
    for flags, named in ((["--whole-word-mask"], "--whole-word-mask"), (["--nsp-prob", "0.3"], "--nsp-prob"),
                         (["--cased"], "--cased"), (["--poisson-lambda", "0"], "must be > 0"),
                         (["--preset", "gpt2-tiny"], "denoise trains a BART model: preset 'gpt2-tiny' is a gpt2 model")):
        assert main(args(root, root / "never", "--max-steps", "1", *flags)) == 2
        assert named in capsys.readouterr().err
    assert not (root / "never").exists()
    from plmkit.cli import build_parser
    from plmkit.cli.pretrain import build_config
    with pytest.raises(ConfigError, match="--poisson-lambda"):  # BERT's run (the default objective) does not read it
        build_config(build_parser().parse_args(["pretrain", "--max-steps", "1", "--poisson-lambda", "2"]))
