import io
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clm_model import save_tiny_model  # noqa: E402
from plmkit.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("chat") / "model")


def test_piped_chat_prints_only_replies_and_exits_at_eof(model_dir):
    command = [sys.executable, "-m", "plmkit.cli", "chat", "--model", str(model_dir), "--max-new-tokens", "6",
               "--seed", "0"]
    run = subprocess.run(command, input="hello\n/reset\nbye\n", capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no prompts or banners when stdin is not a terminal
    assert len(run.stdout.splitlines()) == 2  # one line per message; /reset prints nothing


def _chat(model_dir, text, monkeypatch, capsys, *extra):
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["chat", "--model", str(model_dir), "--max-new-tokens", "4", "--greedy", *extra]) == 0
    return capsys.readouterr()


def test_exit_and_reset(model_dir, monkeypatch, capsys):
    out = _chat(model_dir, "hello\n/exit\nnever answered\n", monkeypatch, capsys)
    assert len(out.out.splitlines()) == 1
    # /reset forgets the history: the second "hello" is answered as the first one was
    out = _chat(model_dir, "hello\n/reset\nhello\n", monkeypatch, capsys)
    first, second = out.out.splitlines()
    assert first == second


def test_long_conversations_stay_in_the_context_window(model_dir, monkeypatch, capsys):
    # 64-token window, 4 new tokens: ten turns cannot all fit; old ones are dropped, the chat goes on
    out = _chat(model_dir, "".join(f"this is message number {i}\n" for i in range(10)), monkeypatch, capsys)
    assert len(out.out.splitlines()) == 10 and out.err == ""
    # a single message too long for the window is reported and skipped, not fatal
    out = _chat(model_dir, "word " * 200 + "\nhello\n", monkeypatch, capsys)
    assert "context window" in out.err and len(out.out.splitlines()) == 1


def test_a_message_that_is_not_utf8_is_reported_and_the_chat_goes_on(model_dir):
    command = [sys.executable, "-m", "plmkit.cli", "chat", "--model", str(model_dir), "--max-new-tokens", "4",
               "--greedy"]
    run = subprocess.run(command, input=b"hel\xfflo\nhello\n", capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert b"UTF-8" in run.stderr and len(run.stdout.splitlines()) == 1


def test_a_system_text_too_long_for_the_context_is_said_at_once(model_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    assert main(["chat", "--model", str(model_dir), "--max-new-tokens", "4", "--system", "word " * 500]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--system is too long" in captured.err
