"""`make demo` on tiny settings: every step of the main job runs on the real all-MiniLM-L6-v2 weights, and
the serve command it prints is one `plmkit serve` takes."""
import shlex

from plmkit import demo
from plmkit.cli import build_parser


def test_demo_fine_tunes_evaluates_predicts_looks_inside_and_says_how_to_serve(minilm_dir, tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--max-steps", "2", "--train-examples", "48", "--eval-examples", "24"])
    out = capsys.readouterr().out
    assert "1. Fine-tune all-MiniLM-L6-v2" in out and "48 snippets, 2 steps" in out
    assert "accuracy" in out and "on 24 test snippets" in out
    assert sum(sentence in out for sentence in demo.SENTENCES) == len(demo.SENTENCES)
    assert "'not' attends most to" in out
    for png in (tmp_path / "attention.png", tmp_path / "sentiment" / "training_curves.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("plmkit serve"))
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.command == "serve" and args.model == [f"sentiment={tmp_path / 'sentiment' / 'model'}"] \
        or args.model == [f"sentiment={tmp_path / 'sentiment' / 'best'}"]


def test_demo_mistakes_are_one_line_and_exit_2_as_every_plmkit_command(minilm_dir, tmp_path, capsys):
    """An --out that is a file, or a step count the fine-tuning refuses: `plmkit demo: error: ...` on one
    line, exit 2, no traceback (--max-steps 0 is a step count, not "use the time budget")."""
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert demo.main(["--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plmkit demo: error: ") and "--out" in err and "Traceback" not in err
    assert demo.main(["--out", str(tmp_path / "run"), "--max-steps", "0", "--train-examples", "16",
                      "--eval-examples", "8"]) == 2
    err = capsys.readouterr().err
    assert "plmkit demo: error: " in err and "max_steps" in err and "Traceback" not in err


def test_demo_max_steps_trains_that_many_steps_even_past_one_epoch(minilm_dir, tmp_path):
    """--max-steps fixes the work (as max_steps overrides epochs in fine-tuning); only the time budget stops at
    one epoch."""
    import argparse
    import json
    files = demo.sentiment_files(tmp_path, 32, 8)  # 2 batches of 16 an epoch
    demo.fine_tune(minilm_dir, files, tmp_path / "sentiment", argparse.Namespace(max_steps=3, time_budget="2m"))
    records = (tmp_path / "sentiment" / "metrics.jsonl").read_text().splitlines()
    assert max(json.loads(line)["step"] for line in records) == 3
