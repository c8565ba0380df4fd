"""Every JSON that plmkit reads goes through `utils.text.parse_json`: a key given twice in one object is
an error naming the file, the line and the key (Python's json keeps the last value silently)."""
import json
import sys
from pathlib import Path

import pytest

from plmkit.errors import CheckpointError, ConfigError, DataError
from plmkit.utils.text import parse_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checks_helpers import classifier_dir  # noqa: E402

TWICE = r"the key '{key}' is given twice in one object; keep one of them"


def test_the_repeated_key_is_named_at_its_second_place():
    text = '{\n  "a": {"b": [1, {"c": 2}]},\n  "d": [{"e": 1}, {"e": 2, "f": 3,\n     "e": 4}]\n}'
    with pytest.raises(DataError, match=r"^f.json:4:6: " + TWICE.format(key="e")):
        parse_json(text, "f.json")
    with pytest.raises(ConfigError, match=r"^f.jsonl:7:18: " + TWICE.format(key="x")):
        parse_json('{"y": 1, "x": 1, "x": 2}', "f.jsonl", ConfigError, line=7)
    assert parse_json('{"a": {"x": 1}, "b": {"x": 1}}', "f.json") == {"a": {"x": 1}, "b": {"x": 1}}
    with pytest.raises(DataError, match=r"^f.json:1:9: not valid JSON \(Expecting ',' delimiter\)$"):
        parse_json('{"a": 1 "b"}', "f.json")


def _record(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name, text, key, read", [
    ("c.jsonl", '{"text": "good film", "label": "positive", "label": "negative"}', "label",
     lambda p: __import__("plmkit.tasks.classification", fromlist=["x"]).read_classification(p)),
    ("r.jsonl", '{"text": "Ann met Bob", "head": {"start": 0, "end": 3, "start": 1}, "tail": {"start": 8, "end": 11},'
                ' "relation": "met"}', "start",
     lambda p: __import__("plmkit.tasks.relation", fromlist=["x"]).read_relations(p)),
    ("n.jsonl", '{"tokens": ["Ann"], "tags": ["B-PER"], "tags": ["O"]}', "tags",
     lambda p: __import__("plmkit.tasks.ner", fromlist=["x"]).read_ner(p)),
    ("t.jsonl", '{"source": "Hallo", "target": "Hello", "source": "zzz"}', "source",
     lambda p: __import__("plmkit.tasks.translation", fromlist=["x"]).TranslationTask().read(p)),
    ("corpus.jsonl", '{"text": "one", "text": "two"}', "text",
     lambda p: list(__import__("plmkit.data.corpus", fromlist=["x"]).iter_texts([p]))),
    ("s.json", json.dumps({"data": [{"paragraphs": [{"context": "zzz", "qas": []}]}]})
     .replace('"context": "zzz"', '"context": "zzz", "context": "Ann is here."'), "context",
     lambda p: __import__("plmkit.tasks.qa", fromlist=["x"]).read_squad(p)),
])
def test_task_data(tmp_path, name, text, key, read):
    path = _record(tmp_path, name, text)
    with pytest.raises(DataError, match=rf"{name}:1:\d+: " + TWICE.format(key=key)):
        read(path)


def test_run_file(tmp_path):
    from plmkit.training.run_config import read_run_file
    path = _record(tmp_path, "run.json", '{"train": {"max_steps": 2,\n "max_steps": 3}}')
    with pytest.raises(ConfigError, match=r"run.json:2:2: " + TWICE.format(key="max_steps")):
        read_run_file(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return classifier_dir(tmp_path_factory.mktemp("cls"))


@pytest.mark.parametrize("file, key, error", [("config.json", "hidden_act", ConfigError),
                                              ("plmkit_task.json", "max_length", ConfigError),
                                              ("tokenizer_config.json", "pad_token", CheckpointError),
                                              ("special_tokens_map.json", "pad_token", CheckpointError),
                                              ("generation_config.json", "temperature", CheckpointError)])
def test_model_directory_files(tmp_path, model_dir, file, key, error):
    import shutil
    from plmkit.tasks.inference import load_model_dir
    copy = Path(shutil.copytree(model_dir, tmp_path / "m"))
    path = copy / file
    text = path.read_text(encoding="utf-8") if path.exists() else '{"temperature": 0.5}'
    value = json.dumps(json.loads(text).get(key))
    path.write_text(text.rstrip().rstrip("}") + f',\n  "{key}": {value}\n}}', encoding="utf-8")
    with pytest.raises(error, match=rf"{file}:\d+:3: " + TWICE.format(key=key)):
        load_model_dir(copy)
