import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clm_model import save_tiny_model  # noqa: E402
from plmkit.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("gen") / "model")


def test_single_prompt_streams_the_continuation(model_dir, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", "The old sailor", "--max-new-tokens", "8",
                 "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("The old sailor") and first.endswith("\n")
    main(["generate", "--model", str(model_dir), "--prompt", "The old sailor", "--max-new-tokens", "8", "--seed", "3",
          "--only-new"])
    assert "The old sailor" + capsys.readouterr().out == first  # same seed, same text


def test_greedy_and_beam_search(model_dir, capsys):
    for extra in (["--greedy"], ["--num-beams", "3"]):
        assert main(["generate", "--model", str(model_dir), "--prompt", "Rain fell", "--max-new-tokens", "5",
                     *extra]) == 0
        assert capsys.readouterr().out.startswith("Rain fell")


def test_file_of_prompts_gives_jsonl(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The old sailor\n\nRain\nA small dog lived in the house at the end\n")
    assert main(["generate", "--model", str(model_dir), "--input", str(prompts), "--max-new-tokens", "6",
                 "--greedy", "--batch-size", "2"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["The old sailor", "", "Rain", "A small dog lived in the house at the end"]
    rows.pop(1)  # a blank line is an empty prompt: the outputs line up with the input lines
    # batching (left padding) gives what each prompt gives alone
    for r in rows:
        main(["generate", "--model", str(model_dir), "--prompt", r["prompt"], "--max-new-tokens", "6", "--greedy",
              "--only-new"])
        assert capsys.readouterr().out == r["completion"] + "\n"
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"prompt": "Rain"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", str(model_dir), "--input", str(jsonl), "--output", str(out),
                 "--max-new-tokens", "3"]) == 0
    assert json.loads(out.read_text())["prompt"] == "Rain"


def test_bad_jsonl_names_the_line(model_dir, tmp_path, capsys):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    assert main(["generate", "--model", str(model_dir), "--input", str(jsonl)]) == 2
    assert "p.jsonl:2" in capsys.readouterr().err


def test_stdout_is_streamed_in_a_subprocess(model_dir):
    run = subprocess.run([sys.executable, "-m", "plmkit.cli", "generate", "--model", str(model_dir), "--prompt", "Hi",
                          "--max-new-tokens", "4", "--greedy"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Hi") and run.stderr == ""


@pytest.mark.parametrize("flags, message", [
    (["--max-new-tokens", "0"], "max_new_tokens"), (["--top-p", "0"], "top_p"),
    (["--temperature", "-1"], "temperature"), (["--num-beams", "0"], "--num-beams"),
    (["--batch-size", "0"], "--batch-size"),
    (["--prompt", b"Rain\xff".decode("utf-8", "surrogateescape")], "UTF-8"),  # a non-UTF-8 argument
])
def test_bad_options_are_clear_errors(model_dir, capsys, flags, message):
    source = [] if "--prompt" in flags else ["--prompt", "Hi"]
    assert main(["generate", "--model", str(model_dir), *source, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plmkit generate: error:") and message in err


def test_temperature_zero_means_greedy(model_dir, capsys):
    outputs = []
    for flags in (["--greedy"], ["--temperature", "0"]):
        assert main(["generate", "--model", str(model_dir), "--prompt", "Rain fell", "--max-new-tokens", "6",
                     *flags]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


def test_flags_that_do_not_apply_and_outputs_that_cannot_be_written(model_dir, tmp_path, capsys):
    (tmp_path / "a-dir").mkdir()
    prompts = tmp_path / "p.txt"
    prompts.write_text("Rain\n")
    base = ["generate", "--model", str(model_dir), "--max-new-tokens", "2", "--greedy"]
    for extra, message in [(["--prompt", "Rain", "--output", str(tmp_path / "o.jsonl")], "--output is for --input FILE"),
                           (["--prompt", "Rain", "--batch-size", "4"], "--batch-size is for --input FILE"),
                           (["--input", str(prompts), "--only-new"], "--only-new is for --prompt"),
                           (["--input", str(prompts), "--output", ""], "--output is empty"),
                           (["--input", str(prompts), "--output", str(tmp_path / "a-dir")], "a directory is in the way")]:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    kept = tmp_path / "kept.jsonl"
    kept.write_text("earlier\n")
    long = tmp_path / "long.txt"
    long.write_text("Rain\n" + "word " * 200 + "\n")
    assert main(base + ["--input", str(long), "--output", str(kept)]) == 2
    assert f"{long}:2: the prompt has" in capsys.readouterr().err and kept.read_text() == "earlier\n"
    assert main(base + ["--prompt", "word " * 200]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--prompt: the prompt has" in captured.err  # nothing printed before the error


def test_a_closed_pipe_ends_quietly_and_a_full_disk_is_one_line(model_dir, tmp_path):
    import subprocess
    import sys
    many = tmp_path / "many.txt"
    many.write_text("Rain\n" * 400)
    cmd = [sys.executable, "-m", "plmkit", "generate", "--model", str(model_dir), "--max-new-tokens", "1", "--greedy"]
    piped = subprocess.run(" ".join(cmd + ["--input", str(many), "--batch-size", "64"]) + " | head -1", shell=True,
                           capture_output=True, text=True, timeout=300)
    assert piped.stdout.count("\n") == 1 and "Traceback" not in piped.stderr
    with open("/dev/full", "w") as full:
        ended = subprocess.run(cmd + ["--prompt", "Rain"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert ended.returncode == 2 and ended.stderr.strip().count("\n") == 0
    assert "cannot write standard output: the disk is full" in ended.stderr


def test_a_checkpoint_asking_generate_for_its_dict_output_still_generates_text(model_dir, tmp_path, capsys):
    """generation_config.json's return_dict_in_generate (transformers users set it) is generate()'s default for
    callers who want it; plmkit's own commands and pipelines take the ids whatever it says."""
    import shutil

    import plmkit
    asking = tmp_path / "asking"
    shutil.copytree(model_dir, asking)
    config = asking / "generation_config.json"
    settings = json.loads(config.read_text()) if config.is_file() else {}
    config.write_text(json.dumps({**settings, "return_dict_in_generate": True, "output_scores": True}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The old sailor\nRain\n")
    for extra in (["--input", str(prompts), "--greedy"], ["--prompt", "Rain", "--num-beams", "2"]):
        assert main(["generate", "--model", str(asking), "--max-new-tokens", "4", *extra]) == 0
        assert capsys.readouterr().out.strip()
    [reply] = plmkit.pipeline("text-generation", model=asking)("Rain", max_new_tokens=4, do_sample=False)
    assert reply["generated_text"].startswith("Rain")
