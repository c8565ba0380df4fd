"""tasks.py: NER windows over long sentences, SQuAD v2 no-answer thresholds, relation markers under LoRA."""
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune_helpers as h  # noqa: E402

from plmkit import tasks  # noqa: E402
from plmkit.data.tasks import ner as ner_data, pad_collate, qa as qa_data, relation as rel_data  # noqa: E402
from plmkit.errors import DataError  # noqa: E402
from plmkit.models.bert import BertConfig, BertForRelationClassification, BertForTokenClassification  # noqa: E402
from plmkit.nn.lora import plain_state_dict  # noqa: E402
from plmkit.tokenization import Tokenizer  # noqa: E402
from plmkit.training import TrainConfig  # noqa: E402
from plmkit.training.optim import build_optimizer  # noqa: E402

# words whose first word pieces differ in the tiny vocabulary; "paris" has three pieces
TAG_OF = {"paris": "B-LOC", "钱": "B-PER", "film": "O", "the": "O", "is": "O", "and": "O", "movie": "O"}
LABELS = ["O", "B-LOC", "B-PER"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(h.tiny_model_dir())


def long_sentences(n_words=(60, 45)) -> list[ner_data.Sentence]:
    order = list(TAG_OF)
    out = []
    for k, n in enumerate(n_words):
        words = [order[(i * 3 + k) % len(order)] for i in range(n)]
        out.append(ner_data.Sentence(words, [TAG_OF[w] for w in words], 1))
    return out


class PerTokenModel(nn.Module):
    """Logits that depend on each token alone (a lookup table), so windowing cannot change them."""

    def __init__(self, table: torch.Tensor, labels=None, qa: bool = False):
        super().__init__()
        self.table = nn.Embedding.from_pretrained(table)
        self.qa = qa
        self.config = SimpleNamespace(id2label=dict(enumerate(labels or [])), num_labels=len(labels or []),
                                      label2id={name: i for i, name in enumerate(labels or [])})

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        out = self.table(input_ids)  # (B, T, C)
        if self.qa:
            return SimpleNamespace(start_logits=out[..., 0], end_logits=out[..., 0], loss=None)
        return SimpleNamespace(logits=out, loss=None)


def oracle(tok) -> PerTokenModel:
    """Tags each word right from its first piece (other pieces and [CLS]/[SEP] say 'O')."""
    table = torch.zeros(len(tok), len(LABELS))
    for word, tag in TAG_OF.items():
        table[tok.convert_tokens_to_ids(tok.tokenize(word)[0]), LABELS.index(tag)] = 5.0
    return PerTokenModel(table, LABELS)


def test_ner_long_sentences_get_one_prediction_per_word(tok):
    sentences = long_sentences()
    model = oracle(tok)
    small = tasks.TaskSpec("ner", max_length=16, stride=4, scheme="BIO")
    large = tasks.TaskSpec("ner", max_length=256, scheme="BIO")
    assert len(tasks.encode("ner", tok, sentences, small, None)) > 2 * len(sentences)  # really windowed
    records = [{"tokens": s.tokens} for s in sentences]
    windowed = tasks.predict_records(model, tok, small, records, batch_size=3)
    assert windowed == tasks.predict_records(model, tok, large, records)  # the same as one window per sentence
    for r, s in zip(windowed, sentences):
        assert r["tags"] == s.tags  # every word, also those past max_length, has its own prediction
        assert [e["start"] for e in r["entities"]] == [i for i, t in enumerate(s.tags) if t != "O"]
    texts = [{"text": " ".join(s.tokens)} for s in sentences]
    by_text = tasks.predict_records(model, tok, small, texts, batch_size=3)
    assert by_text == tasks.predict_records(model, tok, large, texts)
    assert [e["word"] for e in by_text[0]["entities"]] == [w for w in sentences[0].tokens if TAG_OF[w] != "O"]
    # evaluation scores whole sentences: every entity (and every word) past the first window counts
    features = tasks.encode("ner", tok, sentences, small, model.config.label2id)
    metrics = tasks.evaluate_examples(model, tok, small, sentences, features, batch_size=3)
    assert metrics["f1"] == 1.0 and metrics["recall"] == 1.0 and metrics["token_accuracy"] == 1.0
    assert metrics["n"] == len(sentences)


def test_ner_eval_loss_is_the_mean_over_words_counted_once(tok):
    torch.manual_seed(0)
    model = PerTokenModel(torch.randn(len(tok), len(LABELS)), LABELS)
    sentences = long_sentences((60, 45, 7))  # windows and batches of different sizes
    expected = []  # logits depend on each piece alone: a word's loss is that of its first piece
    for s in sentences:
        for word, tag in zip(s.tokens, s.tags):
            logits = model.table.weight[tok.convert_tokens_to_ids(tok.tokenize(word)[0])]
            expected.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor(LABELS.index(tag)))))
    for spec in (tasks.TaskSpec("ner", max_length=16, stride=4, scheme="BIO"), tasks.TaskSpec("ner", max_length=256)):
        features = tasks.encode("ner", tok, sentences, spec, model.config.label2id)
        metrics = tasks.evaluate_examples(model, tok, spec, sentences, features, batch_size=3)
        assert metrics["loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-6)


def test_ner_window_large_enough_equals_a_plain_forward(tok):
    model = BertForTokenClassification.from_pretrained(h.tiny_model_dir(), id2label=dict(enumerate(LABELS)))
    [sentence] = long_sentences((50,))
    spec = tasks.TaskSpec("ner", max_length=200, scheme="BIO")
    [result] = tasks.predict_records(model, tok, spec, [{"tokens": sentence.tokens}])
    pieces = [tok.backend_tokenizer.encode(w, add_special_tokens=False).ids for w in sentence.tokens]
    ids = [tok.cls_token_id] + [i for p in pieces for i in p] + [tok.sep_token_id]
    with torch.no_grad():
        tags = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
    firsts = [1 + sum(len(p) for p in pieces[:w]) for w in range(len(pieces))]
    assert result["tags"] == [LABELS[tags[pos]] for pos in firsts]
    [windowed] = tasks.predict_records(model, tok, tasks.TaskSpec("ner", max_length=16), [{"tokens": sentence.tokens}])
    assert len(windowed["tags"]) == len(sentence.tokens)


def test_ner_finetune_on_long_sentences(tmp_path):
    conll = tmp_path / "long.conll"
    conll.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s.tokens, s.tags))
                                 for s in long_sentences((60, 45, 30))) + "\n", encoding="utf-8")
    opts = tasks.FinetuneOptions(max_steps=2, batch_size=4, lr=1e-3, max_length=16, stride=4, progress_bar=False,
                                 device="cpu", precision="fp32")
    result = tasks.finetune("ner", h.tiny_model_dir(), conll, tmp_path / "out", conll, opts)
    spec = json.loads((tmp_path / "out" / "model" / "plmkit_task.json").read_text())
    assert spec["stride"] == 4 and spec["max_length"] == 16
    again = tasks.evaluate_dir(tmp_path / "out" / "model", conll, device="cpu")
    assert again["f1"] == pytest.approx(result.eval_metrics["eval_f1"]) and again["n"] == 3


def test_squad_v2_null_score_diff_threshold(tok):
    # one-word contexts: null score 0 ([CLS] logits 0), span score 2 * logit(word), so diff = -2 * logit(word)
    rows = [("q1", "film", 1.0, True), ("q2", "movie", -0.5, True),  # diffs -2 and 1: both answerable
            ("q3", "and", -1.5, False), ("q4", "the", -1.0, False)]  # diffs 3 and 2: unanswerable
    table = torch.zeros(len(tok), 1)
    examples = []
    for qid, word, logit, answerable in rows:
        table[tok.convert_tokens_to_ids(word), 0] = logit
        examples.append(qa_data.QAExample(qid, "is ?", word, [{"text": word, "answer_start": 0}] if answerable else [],
                                          not answerable))
    model = PerTokenModel(table, qa=True)
    spec = tasks.TaskSpec("qa", max_length=32, version_2=True)
    features = tasks.encode("qa", tok, examples, spec, None)
    metrics = tasks.evaluate_examples(model, tok, spec, examples, features)
    assert metrics["exact_match"] == 75 and metrics["null_score_diff_threshold"] == 0  # q2 wrongly unanswered
    assert metrics["best_exact"] == 100 and metrics["best_exact_thresh"] == 1.0
    assert metrics["best_f1"] == 100 and metrics["best_f1_thresh"] == 1.0
    tuned = tasks.TaskSpec("qa", max_length=32, version_2=True, null_score_diff_threshold=1.0)
    assert tasks.evaluate_examples(model, tok, tuned, examples, features)["exact_match"] == 100
    records = [{"id": e.id, "question": e.question, "context": e.context} for e in examples]
    assert [r["answer"] for r in tasks.predict_records(model, tok, tuned, records)] == ["film", "movie", "", ""]
    assert [r["answer"] for r in tasks.predict_records(model, tok, spec, records)] == ["film", "", "", ""]


def test_relation_markers_train_under_lora_and_export_plain(tmp_path):
    transformers = pytest.importorskip("transformers")
    tiny = h.tiny_model_dir()
    tok = Tokenizer.from_pretrained(tiny)
    spec = tasks.TaskSpec("relation", max_length=64)
    model = tasks.prepare_model("relation", tiny, tok, spec, ["capital_of", "founded", "no_relation"])
    tasks.set_trainable(model, "relation", tok, tasks.FinetuneOptions(lora_rank=4, lora_dropout=0.0))
    markers = tok.convert_tokens_to_ids(list(rel_data.MARKERS))
    examples = rel_data.read_relations(h.relation_file(tmp_path / "r.jsonl"))
    batch = pad_collate(tok.pad_token_id)(tasks.encode("relation", tok, examples, spec, model.config.label2id))
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


def test_dropout_option_replaces_the_checkpoints_rates(tmp_path):
    """A checkpoint pretrained without dropout fine-tunes with the rate asked for; None keeps the config."""
    from plmkit.errors import ConfigError
    tiny = h.tiny_model_dir()
    tok = Tokenizer.from_pretrained(tiny)
    spec = tasks.TaskSpec("classification", max_length=32)
    kept = tasks.prepare_model("classification", tiny, tok, spec, ["neg", "pos"])
    model = tasks.prepare_model("classification", tiny, tok, spec, ["neg", "pos"], dropout=0.25)
    assert (model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob) == (0.25, 0.25)
    assert kept.config.hidden_dropout_prob == json.loads((Path(tiny) / "config.json").read_text())["hidden_dropout_prob"]
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.25}
    with pytest.raises(ConfigError, match="dropout must be in"):
        tasks.prepare_model("classification", tiny, tok, spec, ["neg", "pos"], dropout=1.0)


def test_prediction_records_that_are_not_objects_are_data_errors():
    for task in ("classification", "ner", "relation", "qa"):
        for bad in (5, [1]):
            with pytest.raises(DataError, match=r"<stdin>:1: expected a JSON object"):
                tasks._records_to_examples(task, [bad], "<stdin>")
    for task in ("relation", "qa"):
        with pytest.raises(DataError, match=r"<stdin>:1: expected a JSON object, got str"):
            tasks._records_to_examples(task, ["a"], "<stdin>")
    with pytest.raises(DataError, match=r"in.jsonl:1: 'text_pair' must be a string"):
        tasks._records_to_examples("classification", [{"text": "a", "text_pair": 5}], "in.jsonl")


def test_conll_prediction_input_missing_or_not_utf8(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        tasks.read_prediction_input("ner", str(tmp_path / "nope.conll"))
    latin = tmp_path / "latin.conll"
    latin.write_bytes(b"John\nJos\xe9\n")
    with pytest.raises(DataError, match=r"latin.conll:2: not UTF-8"):
        tasks.read_prediction_input("ner", str(latin))


def test_model_dir_whose_task_file_and_architecture_disagree(tmp_path):
    from plmkit.errors import CheckpointError
    BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=16,
                                          id2label={0: "O", 1: "B-X"})).save_pretrained(tmp_path)
    tasks.TaskSpec("classification").save(tmp_path)
    with pytest.raises(CheckpointError, match="says task 'classification'.*BertForTokenClassification"):
        tasks.load_model_dir(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        tasks.TaskSpec.load(tmp_path / "nope")


def test_finetune_max_length_beyond_the_models_positions(tmp_path):
    from plmkit.errors import ConfigError
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n')
    with pytest.raises(ConfigError, match=r"max_length=1000 is longer than .*max_position_embeddings=256"):
        tasks.finetune("classification", h.tiny_model_dir(), data, tmp_path / "out",
                       options=tasks.FinetuneOptions(max_length=1000, max_steps=1, device="cpu", progress_bar=False))
    assert not (tmp_path / "out" / "model").exists()


def test_prediction_errors_name_the_file_line_not_the_record_number(tmp_path, monkeypatch):
    """Blank lines do not shift error locations, in a JSONL file or on stdin."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b", "text_pair": 5}\n')
    records, lines = tasks.read_prediction_input("classification", str(path))
    assert lines == [1, 3]
    with pytest.raises(DataError, match=r"in.jsonl:3: 'text_pair' must be a string"):
        tasks.predict_records(None, None, tasks.TaskSpec("classification"), records, where=str(path), lines=lines)
    monkeypatch.setattr("sys.stdin", io.StringIO('\n{"text": "a"}\n\n[1]\n'))
    records, lines = tasks.read_prediction_input("classification", "-")
    with pytest.raises(DataError, match=r"<stdin>:4: expected a JSON object"):
        tasks._records_to_examples("classification", records, "<stdin>", lines)
    table = tmp_path / "in.csv"
    table.write_text('text\n\n"two\nlines"\nthree\n')
    records, lines = tasks.read_prediction_input("classification", str(table))
    assert lines == [3, 5] and records[1] == {"text": "three"}  # a quoted field over two lines starts on 3


def test_relation_prediction_rejects_what_training_rejects():
    overlap = {"text": "ab cd", "head": {"start": 0, "end": 3}, "tail": [2, 5]}
    with pytest.raises(DataError, match=r"in.jsonl:4: head \(0, 3\) and tail \(2, 5\) overlap"):
        tasks._records_to_examples("relation", [overlap], "in.jsonl", [4])
    with pytest.raises(DataError, match=r"in.jsonl:1: needs a non-empty string field 'text'"):
        tasks._records_to_examples("relation", [{"head": [0, 1], "tail": [2, 3]}], "in.jsonl")
    [ok] = tasks._records_to_examples("relation", [{**overlap, "tail": [3, 5], "relation": "x"}], "in.jsonl", [7])
    assert (ok.head, ok.tail, ok.relation, ok.line) == ((0, 3), (3, 5), None, 7)


def test_finetune_resumes_exactly(tmp_path):
    """6 steps straight == 3 steps, then --resume to 6: same losses, same evaluations (a constant lr,
    since a run of 3 steps would otherwise decay it to 0 by step 3)."""
    from plmkit.cli import main
    data = tmp_path / "t.jsonl"
    rows = [("a fine film", "pos"), ("dull and slow", "neg"), ("warm and funny", "pos"), ("a waste", "neg")] * 6
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))

    def run(out, steps, *extra):
        return main(["finetune", "--task", "classification", "--model", str(h.tiny_model_dir()), "--train", str(data),
                     "--eval", str(data), "--out", str(out), "--max-steps", str(steps), "--batch-size", "4",
                     "--lr", "1e-3", "--dropout", "0.1", "--eval-every", "2", "--log-every", "1", "--schedule", "constant",
                     "--warmup-ratio", "0", "--no-progress", *extra])

    def records(out):
        return [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s", "wall")}
                for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]

    assert run(tmp_path / "straight", 6) == 0
    assert run(tmp_path / "resumed", 3, "--save-every", "3") == 0
    assert run(tmp_path / "resumed", 6, "--resume") == 0
    straight, resumed = records(tmp_path / "straight"), records(tmp_path / "resumed")
    losses = [(r["step"], r["loss"]) for r in straight if "loss" in r]
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    assert [(r["step"], r["loss"]) for r in resumed if "loss" in r] == losses
    evals = {r["step"]: r["eval_loss"] for r in straight if "eval_loss" in r}
    assert evals.keys() == {2, 4, 6}  # the resumed run also evaluated at its end, step 3
    assert {step: loss for step, loss in ((r["step"], r.get("eval_loss")) for r in resumed) if step in evals
            and loss is not None} == evals


def test_lora_adapters_of_frozen_layers_stay_frozen():
    tiny = h.tiny_model_dir()
    tok = Tokenizer.from_pretrained(tiny)
    model = tasks.prepare_model("classification", tiny, tok, tasks.TaskSpec("classification"), ["neg", "pos"])
    tasks.set_trainable(model, "classification", tok, tasks.FinetuneOptions(freeze_layers=1, lora_rank=2))
    adapters = {n: p.requires_grad for n, p in model.named_parameters() if "lora_" in n}
    assert adapters and all(not trains for n, trains in adapters.items() if ".layers.0." in n)
    assert any(".layers.1." in n for n in adapters) and all(trains for n, trains in adapters.items() if ".layers.1." in n)
