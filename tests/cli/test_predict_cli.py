"""`plmkit predict`: errors reach the user as one line, never a traceback."""
from plmkit import tasks
from plmkit.cli import main
from plmkit.tasks.classification import ClassificationTask
from plmkit.tasks.relation import RelationTask


def test_unwritable_output_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tasks, "load_task", lambda d: ClassificationTask())
    monkeypatch.setattr(tasks, "read_prediction_input", lambda task, path: ([{"text": "a"}], [1]))
    monkeypatch.setattr(tasks, "predict_dir", lambda *a, **k: [{"label": "pos"}])
    out = tmp_path / "no-such-dir" / "p.jsonl"
    assert main(["predict", "--model", str(tmp_path), "--input", "in.jsonl", "--output", str(out)]) == 2
    assert f"--output {out}: cannot write there" in capsys.readouterr().err


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
