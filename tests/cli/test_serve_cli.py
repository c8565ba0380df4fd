"""`plmkit serve` as a user runs it: a process on 127.0.0.1 that says where it listens, answers, and stops
on Ctrl-C; bad --model values are refused before anything loads."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import serve_helpers as sh  # noqa: E402
from plmkit.cli import main  # noqa: E402


def test_serve_runs_answers_and_stops_on_interrupt(tmp_path):
    model = sh.decoder_dir(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "plmkit", "serve", "--model", f"tiny={model}", "--port", "0",
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stderr.readline()
        assert "plmkit serve: listening on http://127.0.0.1:" in line, line
        url = line.split("listening on ")[1].split()[0]
        sh.wait_ready(url, None, time.monotonic() + 60)
        status, body = sh.post(url, "/v1/completions", {"model": "tiny", "prompt": "Rain", "max_tokens": 3})
        assert status == 200 and body["usage"]["completion_tokens"] == 3
        models = json.loads(urllib.request.urlopen(f"{url}/v1/models").read())
        assert [m["id"] for m in models["data"]] == ["tiny"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.stderr.close()


def test_bad_model_values_are_refused_before_loading(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    model = sh.decoder_dir(tmp_path)
    assert main(["serve", "--model", f"a={model}", "--model", f"a={model}"]) == 2
    assert "two models called 'a'" in capsys.readouterr().err
    assert main(["serve", "--model", str(model), "--max-batch", "0"]) == 2
    assert "max_batch (--max-batch) must be >= 1" in capsys.readouterr().err
