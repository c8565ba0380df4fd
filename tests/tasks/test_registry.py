"""The task registry, plmkit_task.json (today's and older files), and what every task's prediction checks."""
import inspect
import io
import json

import pytest

from plmkit import tasks
from plmkit.errors import ConfigError, DataError
from plmkit.models.bert import BertConfig, BertForTokenClassification
from plmkit.tasks.classification import ClassificationTask


def test_prediction_records_that_are_not_objects_are_data_errors():
    for task in ("classification", "ner", "relation", "qa"):
        for bad in (5, [1]):
            with pytest.raises(DataError, match=r"<stdin>:3: expected a JSON object"):
                tasks.get_task(task)().to_examples([bad], "<stdin>", [3])
            with pytest.raises(DataError, match=r"inputs:1: expected a dict"):  # Python records: no JSON wording
                tasks.get_task(task)().to_examples([bad], "inputs")
    for task in ("relation", "qa"):
        with pytest.raises(DataError, match=r"<stdin>:1: expected a JSON object, got str"):
            tasks.get_task(task)().to_examples(["a"], "<stdin>", [1])
    with pytest.raises(DataError, match=r"in.jsonl:1: 'text_pair' must be a string"):
        ClassificationTask().to_examples([{"text": "a", "text_pair": 5}], "in.jsonl")


@pytest.mark.parametrize("task", list(tasks.TASKS))
@pytest.mark.parametrize("value, message", [
    ("1" + "0" * 5000, r"an integer of 5001 digits, more than the 4300 Python reads"),  # a ValueError in json
    ("[" * 100_000 + "]" * 100_000, r"arrays and objects nested 10000[13] deep here"),  # a RecursionError
])
def test_json_python_does_not_read_is_a_data_error_at_file_line(tmp_path, task, value, message):
    """json.loads raises ValueError (not JSONDecodeError) for an integer of more than 4,300 digits, and
    RecursionError for deep nesting: every reader showed a traceback instead of file:line."""
    if task == "qa":
        path = tmp_path / "data.json"
        path.write_text('{"data": [\n  {"paragraphs": [], "x": ' + value + "}]}\n")
    else:
        path = tmp_path / "data.jsonl"
        path.write_text('\n{"text": ' + value + "}\n")  # (NER tells JSON lines from CoNLL by this line)
    with pytest.raises(DataError, match=r"data.jsonl?:2:\d+: " + message):
        tasks.get_task(task)().read(path)
    if task != "qa":
        with pytest.raises(DataError, match=r"data.jsonl:2:\d+: " + message):  # prediction input
            tasks.read_prediction_input(task, str(path))


def test_model_dir_whose_task_file_and_architecture_disagree(tmp_path):
    from plmkit.errors import CheckpointError
    BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=16,
                                          id2label={0: "O", 1: "B-X"})).save_pretrained(tmp_path)
    ClassificationTask().save(tmp_path)
    with pytest.raises(CheckpointError, match="says task 'classification'.*BertForTokenClassification"):
        tasks.load_model_dir(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        tasks.load_task(tmp_path / "nope")


def test_prediction_errors_name_the_file_line_not_the_record_number(tmp_path, monkeypatch):
    """Blank lines do not shift error locations, in a JSONL file or on stdin."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b", "text_pair": 5}\n')
    records, lines = tasks.read_prediction_input("classification", str(path))
    assert lines == [1, 3]
    with pytest.raises(DataError, match=r"in.jsonl:3: 'text_pair' must be a string"):
        tasks.predict_records(None, None, ClassificationTask(), records, where=str(path), lines=lines)
    with pytest.raises(ConfigError, match=r"lines: 1 line numbers for 2 records"):
        tasks.predict_records(None, None, ClassificationTask(), records, where=str(path), lines=[1])
    monkeypatch.setattr("sys.stdin", io.StringIO('\n{"text": "a"}\n\n[1]\n'))
    with pytest.raises(DataError, match=r"<stdin>:4: expected a JSON object"):  # as in a file
        tasks.read_prediction_input("classification", "-")
    table = tmp_path / "in.csv"
    table.write_text('text\n\n"two\nlines"\nthree\n')
    records, lines = tasks.read_prediction_input("classification", str(table))
    assert lines == [3, 5] and records[1] == {"text": "three"}  # a quoted field over two lines starts on 3


# the fields every plmkit_task.json held before tasks had their own settings (one class for all tasks)
OLD_FILE = {"max_length": 64, "problem_type": None, "scheme": None, "stride": None, "no_relation": None,
            "doc_stride": 128, "max_query_length": 64, "max_answer_length": 30, "version_2": False,
            "null_score_diff_threshold": 0.0}


@pytest.mark.parametrize("name, own", [("classification", {"problem_type": "multi_label_classification"}),
                                       ("ner", {"scheme": "BIOES", "stride": 8}), ("relation", {"no_relation": "NA"}),
                                       ("qa", {"version_2": True, "doc_stride": 16, "max_query_length": 24})])
def test_task_files_written_by_earlier_versions_load(tmp_path, name, own):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / tasks.TASK_FILE).write_text(json.dumps({"task": name, **OLD_FILE, **own}))
    task = tasks.load_task(tmp_path)
    assert task.name == name and task.settings.max_length == 64
    assert all(getattr(task.settings, k) == v for k, v in own.items())
    (tmp_path / "again").mkdir()
    task.save(tmp_path / "again")
    again = json.loads((tmp_path / "again" / tasks.TASK_FILE).read_text())
    assert again == {"task": name, **task.settings.to_dict()}  # only the task's own fields now
    (tmp_path / "again" / "config.json").write_text("{}")
    assert tasks.load_task(tmp_path / "again").settings == task.settings


def test_task_file_errors_are_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / tasks.TASK_FILE).write_text(json.dumps({"task": "ner", "strid": 4}))
    with pytest.raises(ConfigError, match=r"plmkit_task.json: ner: unknown key\(s\) 'strid' \(did you mean 'stride'\?\)"):
        tasks.load_task(tmp_path)
    (tmp_path / tasks.TASK_FILE).write_text(json.dumps({"task": "parsing"}))
    with pytest.raises(ConfigError, match="unknown task 'parsing'; choose one of classification, ner, relation, qa, sft"):
        tasks.load_task(tmp_path)
    with pytest.raises(ConfigError, match="unknown task 'nerr'; choose one of"):
        tasks.get_task("nerr")


def test_a_model_dir_without_task_file_gets_its_task_from_the_architecture(tmp_path):
    BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=16, id2label={0: "O", 1: "B-X"})).save_pretrained(tmp_path)
    assert tasks.load_task(tmp_path).name == "ner"
    from plmkit.models.bert import BertModel
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path / "body")
    with pytest.raises(ConfigError, match="name no task model; fine-tune it first"):
        tasks.load_task(tmp_path / "body")


def test_every_task_fills_the_protocol():
    from plmkit.models.auto import model_class
    for name, task in tasks.TASKS.items():
        assert task.name == name and task.settings_class.section == name
        family = {"causal-lm": "gpt2", "seq2seq-lm": "bart"}.get(task.model_task, "bert")
        assert model_class(family, task.model_task)  # the family registry has its model class
        assert callable(getattr(task, "reader", None)) or task.read is not tasks.Task.read, name
        for method in ("encode", "evaluate"):
            assert getattr(task, method) is not getattr(tasks.Task, method), (name, method)
        # under torchrun every process evaluates its part (tests/training/test_distributed.py)
        assert task.sharded_evaluation and "part" in inspect.signature(task.evaluate).parameters, name


def test_no_code_outside_the_task_modules_branches_on_a_task_name():
    """A guard: a comparison with a task's name (task == "ner", task in ("qa", ...)) outside
    src/plmkit/tasks/ means task knowledge leaked out of its module."""
    import re
    from pathlib import Path
    import plmkit
    root = Path(plmkit.__file__).parent
    names = "|".join(tasks.TASKS)
    patterns = [re.compile(rf"""[=!]=\s*["']({names})["']"""), re.compile(rf"""["']({names})["']\s*[=!]="""),
                re.compile(rf"""\bin\s*[(\[{{][^)\]}}]*["']({names})["']""")]
    assert patterns[0].search('if spec.task == "qa":') and patterns[2].search('task in ("classification", "ner")')
    hits = []
    for path in root.rglob("*.py"):
        if root / "tasks" in path.parents:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(p.search(line) for p in patterns):
                hits.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
