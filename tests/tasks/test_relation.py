"""tasks/relation.py: entity markers, their embedding rows under LoRA, relation F1."""
import json

import pytest
import torch

import finetune_helpers as h
from plmkit import tasks
from plmkit.data.collate import pad_collate
from plmkit.errors import ConfigError, DataError
from plmkit.models.bert import BertForRelationClassification
from plmkit.nn.lora import plain_state_dict
from plmkit.recipes.finetune import ModelSettings, finetune, prepare_model, set_trainable
from plmkit.tasks import relation as R
from plmkit.tasks.relation import RelationTask
from plmkit.tokenization import Tokenizer
from plmkit.training import TrainConfig
from plmkit.training.optim import build_optimizer


def test_relation_markers_and_positions(tmp_path):
    path = h.relation_file(tmp_path / "r.jsonl")
    ex = R.read_relations(path)
    assert R.with_markers(ex[0]) == " [E1] Steve Jobs [/E1]  founded  [E2] Apple [/E2]  in 1976."
    tok = Tokenizer.from_pretrained(h.tiny_model_dir())
    tok.add_special_tokens({"additional_special_tokens": list(R.MARKERS)})
    f = R.encode_relations(tok, ex, 64, {"founded": 0, "capital_of": 1, "no_relation": 2})
    e1, e2 = tok.convert_tokens_to_ids(["[E1]", "[E2]"])
    assert all(x["input_ids"][x["entity_positions"][0]] == e1 and x["input_ids"][x["entity_positions"][1]] == e2
               for x in f)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ab cd", "head": {"start": 0, "end": 3}, "tail": [2, 5], "relation": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: head .* overlap"):
        R.read_relations(bad)
    bad.write_text(json.dumps({"text": "ab", "head": [0, 1], "tail": [1, 9], "relation": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'tail' span 1..9"):
        R.read_relations(bad)


def test_relation_entity_beyond_max_length_is_an_error(tmp_path):
    """A marker cut off by truncation would silently point the classifier at [CLS]."""
    tok = Tokenizer.from_pretrained(h.tiny_model_dir())
    with pytest.raises(ConfigError, match="lacks the entity markers"):  # not a misleading "beyond max_length"
        R.encode_relations(tok, R.read_relations(h.relation_file(tmp_path / "r.jsonl")), 64, None)
    tok.add_special_tokens({"additional_special_tokens": list(R.MARKERS)})
    text = "the film " * 40 + "Steve Jobs founded Apple"
    end = len(text)
    path = h.relation_file(tmp_path / "long.jsonl", [
        h.RELATIONS[0], {"text": text, "head": [end - 24, end - 14], "tail": [end - 5, end], "relation": "founded"}])
    ex = R.read_relations(path)
    with pytest.raises(DataError, match=r"long.jsonl:2: the head entity lies beyond max_length=32"):
        R.encode_relations(tok, ex, 32, {"founded": 0, "no_relation": 1}, path)
    assert len(R.encode_relations(tok, ex, 256, {"founded": 0, "no_relation": 1}, path)) == 2


def test_relation_markers_train_under_lora_and_export_plain(tmp_path):
    transformers = pytest.importorskip("transformers")
    tiny = h.tiny_model_dir()
    tok = Tokenizer.from_pretrained(tiny)
    spec = RelationTask.of(max_length=64)
    model = prepare_model(spec, tiny, tok, ["capital_of", "founded", "no_relation"])
    set_trainable(model, spec, tok, ModelSettings(lora_rank=4, lora_dropout=0.0))
    markers = tok.convert_tokens_to_ids(list(R.MARKERS))
    examples = R.read_relations(h.relation_file(tmp_path / "r.jsonl"))
    batch = pad_collate(tok.pad_token_id)(spec.encode(tok, examples, model.config.label2id))
    before = plain_state_dict(model)["bert.embeddings.word.weight"].clone()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.01, max_steps=1))
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    after = plain_state_dict(model)["bert.embeddings.word.weight"]
    others = [i for i in range(len(before)) if i not in markers]
    assert torch.equal(after[others], before[others])  # the pretrained vocabulary stays frozen
    assert all(not torch.allclose(after[m], before[m]) for m in markers)  # each marker row trained

    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits
        model.save_pretrained(tmp_path / "m")
        reloaded = BertForRelationClassification.from_pretrained(tmp_path / "m")
        assert torch.allclose(reloaded(**inputs).logits, logits, atol=1e-5)  # merged export == unmerged model
        hf = transformers.AutoModel.from_pretrained(tmp_path / "m").eval()  # a plain HF BertModel
        mask = batch["attention_mask"].bool()
        ours = reloaded.bert(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        assert torch.allclose(ours[mask], theirs[mask], atol=1e-5)


def test_relation_prediction_rejects_what_training_rejects():
    overlap = {"text": "ab cd", "head": {"start": 0, "end": 3}, "tail": [2, 5]}
    with pytest.raises(DataError, match=r"in.jsonl:4: head \(0, 3\) and tail \(2, 5\) overlap"):
        RelationTask().to_examples([overlap], "in.jsonl", [4])
    with pytest.raises(DataError, match=r"in.jsonl:1: no 'text' field \(a non-empty string\)"):
        RelationTask().to_examples([{"head": [0, 1], "tail": [2, 3]}], "in.jsonl")
    [ok] = RelationTask().to_examples([{**overlap, "tail": [3, 5], "relation": "x"}], "in.jsonl", [7])
    assert (ok.head, ok.tail, ok.relation, ok.line) == ((0, 3), (3, 5), None, 7)


def test_relation_extraction(tmp_path):
    data = h.relation_file(tmp_path / "rel.jsonl")
    result = finetune("relation", h.tiny_model_dir(), data, tmp_path / "out", data,
                            **h.quick(epochs=4, batch_size=2, lr=3e-3))
    assert {"eval_precision", "eval_recall", "eval_f1"} <= set(result.eval_metrics)
    model_dir = tmp_path / "out" / "model"
    spec = json.loads((model_dir / "plmkit_task.json").read_text())
    assert spec["no_relation"] == "no_relation"
    model, tok, _ = tasks.load_model_dir(model_dir)
    assert tok.convert_tokens_to_ids("[E2]") < model.get_input_embeddings().num_embeddings == len(tok)
    pred = tasks.predict_dir(model_dir, [{k: v for k, v in h.RELATIONS[0].items() if k != "relation"}], device="cpu")
    assert pred[0]["relation"] in ("founded", "capital_of", "no_relation")
    transformers = pytest.importorskip("transformers")
    transformers.AutoModel.from_pretrained(model_dir)  # HF sees the encoder


@pytest.mark.parametrize("change, message", [
    ({"head": {"start": True, "end": 10}}, "'head' start must be an integer, got bool True"),
    ({"head": {"start": "0", "end": 10}}, "'head' start must be an integer, got str '0'"),
    ({"tail": [19, 24.0]}, "'tail' end must be an integer, got float 24.0"),
    ({"head": {"start": 0}}, "no 'head' end field"),
    ({"head": {"start": 0, "end": 10, "text": "Jobs"}}, "'head' text 'Jobs' is not the text at 0..10 \\('Steve Jobs'\\)"),
    ({"head": "Steve Jobs"}, "'head' must be .* or \\[s, e\\] \\(character offsets\\), got str"),
    ({"label": "founded"}, "give one of 'relation', 'label', not both"),
])
def test_relation_values_are_checked_by_type(tmp_path, change, message):
    """A string or float offset used to be reported as a span outside the text, true taken as 1."""
    path = h.relation_file(tmp_path / "r.jsonl", [h.RELATIONS[1], {**h.RELATIONS[0], **change}])
    with pytest.raises(DataError, match=r"r.jsonl:2: " + message):
        R.read_relations(path)


def test_the_relations_of_a_file_have_one_json_type(tmp_path):
    path = h.relation_file(tmp_path / "r.jsonl", [h.RELATIONS[0], {**h.RELATIONS[2], "relation": 3}])
    with pytest.raises(DataError, match=r"r.jsonl: relations mix kinds: string \(first at line 1\), integer \(first at line 2\)"):
        R.read_relations(path)


def test_a_no_relation_class_the_run_gives_is_honoured_and_must_be_a_training_relation():
    rows = [R.RelationExample("a b", (0, 1), (2, 3), relation, i) for i, relation in
            enumerate(["founded", "unrelated", "no_relation"], 1)]
    given = RelationTask.of(no_relation="unrelated")
    given.discover(rows, "rel.jsonl")
    assert given.settings.no_relation == "unrelated"
    with pytest.raises(DataError, match=r"rel.jsonl: no_relation is 'nothing' \(given\), but no training example has "
                                        r"that relation; its relations: founded, no_relation, unrelated"):
        RelationTask.of(no_relation="nothing").discover(rows, "rel.jsonl")
    found = RelationTask()  # nothing given: the first of the usual names
    found.discover(rows, "rel.jsonl")
    assert found.settings.no_relation == "no_relation"
