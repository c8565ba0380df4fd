"""`plmkit predict`: errors reach the user as one line, never a traceback."""
from plmkit import tasks
from plmkit.cli import main


def test_unwritable_output_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tasks.TaskSpec, "load", classmethod(lambda cls, d: cls(task="classification")))
    monkeypatch.setattr(tasks, "read_prediction_input", lambda task, path: [{"text": "a"}])
    monkeypatch.setattr(tasks, "predict_dir", lambda *a, **k: [{"label": "pos"}])
    out = tmp_path / "no-such-dir" / "p.jsonl"
    assert main(["predict", "--model", str(tmp_path), "--input", "in.jsonl", "--output", str(out)]) == 2
    assert f"--output {out}: cannot write there" in capsys.readouterr().err
