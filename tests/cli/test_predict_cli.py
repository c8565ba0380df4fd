"""`plmkit predict`: errors reach the user as one line, never a traceback."""
import pytest

from plmkit import tasks
from plmkit.cli import main
from plmkit.tasks.classification import ClassificationTask
from plmkit.tasks.qa import QATask
from plmkit.tasks.relation import RelationTask


def test_unwritable_output_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tasks, "load_task", lambda d: ClassificationTask())
    monkeypatch.setattr(tasks, "read_prediction_input", lambda task, path: ([{"text": "a"}], [1]))
    monkeypatch.setattr(tasks, "predict_dir", lambda *a, **k: [{"label": "pos"}])
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "p.jsonl"
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", "in.jsonl", "--output", str(out)]) == 2
    assert capsys.readouterr().err == (f"plmkit predict: error: cannot write {tmp_path / 'a-file'}: a file is in the "
                                       "way of a directory (File exists); what was written before is intact\n")
    kept = tmp_path / "kept.jsonl"
    kept.write_text("earlier results\n")

    def half_way(*args, **kwargs):
        yield {"label": "pos"}
        raise ZeroDivisionError

    monkeypatch.setattr(tasks, "predict_dir", half_way)
    with pytest.raises(ZeroDivisionError):  # a failure half-way through: the earlier file stays whole
        main(["predict", "--model", str(tmp_path / "model"), "--input", "in.jsonl", "--output", str(kept)])
    assert kept.read_text() == "earlier results\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "kept.jsonl"]


def test_bad_record_is_named_by_its_file_line(tmp_path, capsys, monkeypatch):
    task = RelationTask()
    monkeypatch.setattr(tasks, "load_task", lambda d: task)
    monkeypatch.setattr(tasks, "predict_dir", lambda model, records, *a, where, lines, **k:
                        tasks.predict_records(None, None, task, records, where=where, lines=lines))
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "ab cd", "head": [0, 2], "tail": [3, 5]}\n\n'
                    '{"text": "ab cd", "head": [0, 3], "tail": [2, 5]}\n')
    assert main(["predict", "--model", str(tmp_path), "--input", str(path)]) == 2
    assert f"{path}:3: head (0, 3) and tail (2, 5) overlap" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "-1"], "batch_size (--batch-size) must be >= 1, got -1"),
    (["--batch-size", "0"], "batch_size (--batch-size) must be >= 1, got 0"),
    (["--device", "gpu"], "device (--device) must be auto, cpu, cuda or cuda:N"),
])
def test_inference_settings_are_checked_where_they_enter(tmp_path, capsys, monkeypatch, command, flags, message):
    """evaluate and predict share one declaration of their settings; a bad value stops before any work
    (a negative batch size used to give an empty result and exit code 0)."""
    monkeypatch.setattr(tasks, "load_task", lambda d: pytest.fail("loaded a model with bad settings"))
    data = ["--input", "in.jsonl"] if command == "predict" else ["--data", "in.jsonl"]
    assert main([command, "--model", str(tmp_path), *data, *flags]) == 2
    assert message in capsys.readouterr().err


def test_the_model_is_required_by_name(capsys):
    assert main(["evaluate", "--data", "d.jsonl"]) == 2
    assert "model (--model) is required" in capsys.readouterr().err


def test_python_dash_m_plmkit_is_the_cli():
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "plmkit", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "finetune" in run.stdout


def stdin_bytes(monkeypatch, raw: bytes):
    import io
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))


def test_stdin_is_read_as_a_file_is(tmp_path, capsys, monkeypatch):
    """Empty stdin was an empty result with exit code 0; a BOM on stdin was refused, in a file not."""
    monkeypatch.setattr(tasks, "load_for_inference", lambda *a, **k: (None, None, ClassificationTask()))
    monkeypatch.setattr(tasks, "predict_records", lambda m, t, task, records, *a, **k: [{"text": r["text"]} for r in records])
    stdin_bytes(monkeypatch, b"")
    assert main(["predict", "--model", str(tmp_path), "--input", "-"]) == 2
    assert "<stdin>: no input (stdin is empty)" in capsys.readouterr().err
    stdin_bytes(monkeypatch, '\ufeff{"text": "good"}\n'.encode("utf-8"))
    assert main(["predict", "--model", str(tmp_path), "--input", "-"]) == 0
    assert capsys.readouterr().out == '{"text": "good"}\n'


@pytest.mark.parametrize("path, message", [("", "empty path"), ("{dir}", "{dir}: is a directory")])
def test_an_input_that_is_no_file_says_what_it_is(tmp_path, capsys, monkeypatch, path, message):
    monkeypatch.setattr(tasks, "load_task", lambda d: ClassificationTask())
    assert main(["predict", "--model", str(tmp_path), "--input", path.format(dir=tmp_path)]) == 2
    assert message.format(dir=tmp_path) in capsys.readouterr().err


def test_undefined_metrics_are_null_in_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tasks, "evaluate_dir", lambda *a, **k: {"pearson": float("nan"), "mse": 0.25, "n": 2})
    assert main(["evaluate", "--model", str(tmp_path), "--data", "d.jsonl", "--json"]) == 0
    assert capsys.readouterr().out == '{"pearson": null, "mse": 0.25, "n": 2}\n'


def test_a_setting_the_models_task_has_not_is_named_once():
    from plmkit.errors import ConfigError
    from plmkit.tasks.inference import with_settings
    with pytest.raises(ConfigError, match=r"^--null-score-diff-threshold is not a setting of a classification model$"):
        with_settings(ClassificationTask(), null_score_diff_threshold=5.0)


def test_stdin_is_answered_line_by_line_as_it_comes(capsys, monkeypatch):
    """Each answer is out before the next line is read (a translator at a prompt answers each sentence)."""
    import io
    import types
    monkeypatch.setattr(tasks, "load_for_inference", lambda *a, **k: (None, None, ClassificationTask()))
    monkeypatch.setattr(tasks, "predict_records", lambda m, t, task, records, *a, **k: [{"text": r["text"]} for r in records])
    lines = iter([b'{"text": "one"}\n', b'{"text": "two"}\n', b""])
    seen = []

    def readline():
        seen.append(capsys.readouterr().out)  # what was written before this line was asked for
        return next(lines)

    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=types.SimpleNamespace(readline=readline),
                                                           read=io.StringIO("").read))
    assert main(["predict", "--model", "m", "--input", "-"]) == 0
    assert seen == ["", '{"text": "one"}\n', '{"text": "two"}\n']


def test_stdin_records_are_numbered_and_their_ids_checked_as_in_a_file(tmp_path, capsys, monkeypatch):
    """Each stdin line was predicted as a list of its own: every QA record without an id was "1", and a
    repeated id passed."""
    monkeypatch.setattr(tasks, "load_for_inference", lambda *a, **k: (None, None, QATask()))
    monkeypatch.setattr(tasks, "predict_records", lambda m, t, task, records, bs, where, lines:
                        [{"id": e.id} for e in task.to_examples(records, where, lines)])
    record = '{"question": "Q?", "context": "C."'
    stdin_bytes(monkeypatch, f"{record}}}\n\n{record}}}\n{record}, \"id\": \"q\"}}\n".encode())
    assert main(["predict", "--model", str(tmp_path), "--input", "-"]) == 0
    assert capsys.readouterr().out == '{"id": "1"}\n{"id": "2"}\n{"id": "q"}\n'
    stdin_bytes(monkeypatch, f"{record}, \"id\": \"q\"}}\n{record}, \"id\": \"q\"}}\n".encode())
    assert main(["predict", "--model", str(tmp_path), "--input", "-"]) == 2
    assert "<stdin>:2: id 'q' is also the id of <stdin>:1; each must be unique" in capsys.readouterr().err
