"""recipes/finetune.py: the fine-tuning run (freezing, LoRA, dropout, resume) and its RunConfig."""
import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

import finetune_helpers as h
from plmkit import tasks
from plmkit.errors import ConfigError, DataError
from plmkit.models.bert import BertConfig, BertForMaskedLM
from plmkit.recipes.finetune import ModelSettings, finetune, freeze, prepare_model, set_trainable
from plmkit.tasks.classification import ClassificationTask
from plmkit.tokenization import Tokenizer
from plmkit.training import TrainConfig, param_groups


@pytest.fixture(scope="module")
def en_sentiment(tmp_path_factory):
    return h.en_sentiment_files(tmp_path_factory.mktemp("en"))


def test_dropout_option_replaces_the_checkpoints_rates(tmp_path):
    """A checkpoint pretrained without dropout fine-tunes with the rate asked for; None keeps the config."""
    from plmkit.errors import ConfigError
    tiny = h.tiny_model_dir()
    tok = Tokenizer.from_pretrained(tiny)
    spec = ClassificationTask.of(max_length=32)
    kept = prepare_model(spec, tiny, tok, ["neg", "pos"])
    model = prepare_model(spec, tiny, tok, ["neg", "pos"], dropout=0.25)
    assert (model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob) == (0.25, 0.25)
    assert kept.config.hidden_dropout_prob == json.loads((Path(tiny) / "config.json").read_text())["hidden_dropout_prob"]
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.25}
    with pytest.raises(ConfigError, match="dropout must be in"):
        prepare_model(spec, tiny, tok, ["neg", "pos"], dropout=1.0)


def test_finetune_max_length_beyond_the_models_positions(tmp_path):
    from plmkit.errors import ConfigError
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n')
    with pytest.raises(ConfigError, match=r"max_length=1000 is longer than .*256 positions"):
        finetune("classification", h.tiny_model_dir(), data, tmp_path / "out",
                       **dict(max_length=1000, max_steps=1, device="cpu", progress_bar=False))
    assert not (tmp_path / "out" / "model").exists()


def test_finetune_resumes_exactly(tmp_path):
    """6 steps straight == 3 steps, then resumed to 6: same losses, same evaluations (a constant lr,
    since a run of 3 steps would otherwise decay it to 0 by step 3; the longer run is a change, said so)."""
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
    assert run(tmp_path / "resumed", 6, "--resume") == 2  # another length: refused, by name
    assert run(tmp_path / "resumed", 6, "--resume-with-changes") == 0
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
    model = prepare_model(ClassificationTask(), tiny, tok, ["neg", "pos"])
    set_trainable(model, ClassificationTask(), tok, ModelSettings(freeze_layers=1, lora_rank=2))
    adapters = {n: p.requires_grad for n, p in model.named_parameters() if "lora_" in n}
    assert adapters and all(not trains for n, trains in adapters.items() if ".layers.0." in n)
    assert any(".layers.1." in n for n in adapters) and all(trains for n, trains in adapters.items() if ".layers.1." in n)


def test_lora_on_bert2bert_trains_the_adapters_only():
    """An encoder-decoder has no base_prefix: its body is what lies under its body_roots (the encoder and the
    decoder with its LM head), frozen under LoRA as a BART's is."""
    from plmkit.tasks.translation import TranslationTask
    tiny = h.tiny_model_dir()
    tok = Tokenizer.from_pretrained(tiny)
    model = prepare_model(TranslationTask(), tiny, tok, init="bert2bert")
    set_trainable(model, TranslationTask(), tok, ModelSettings(init="bert2bert", lora_rank=2))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("decoder.") for n in trained) and all(".lora_" in n for n in trained), trained


def test_freeze_body_refuses_a_head_tied_to_the_embeddings():
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=50, n_positions=16))
    with pytest.raises(ConfigError, match=r"--freeze-body trains the task head only, but GPT2LMHeadModel's head "
                                          r"\(lm_head.weight\) is tied to its token embedding.*--lora-rank"):
        freeze(model, body=True)


def test_zh_sentiment_head_only_really_freezes(tmp_path):
    d = h.data_dir("zh-sentiment")
    train = h.head_lines(d / "train.jsonl", tmp_path / "train.jsonl", 200)
    from plmkit.models.bert import BertForSequenceClassification
    start = BertForSequenceClassification.from_pretrained(h.tiny_model_dir(), id2label={0: "negative", 1: "positive"})
    finetune("classification", h.tiny_model_dir(), train, tmp_path / "out", None, **h.quick(freeze_body=True))
    end = BertForSequenceClassification.from_pretrained(tmp_path / "out" / "model")
    before, after = start.state_dict(), end.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("bert."))
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_freeze_layers_grads_and_layer_lr_groups():
    from plmkit.models.bert import BertForSequenceClassification
    model = BertForSequenceClassification.from_pretrained(h.tiny_model_dir(), id2label={0: "a", 1: "b"})
    frozen = freeze(model, layers=1)
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
    finetune("classification", h.tiny_model_dir(), en_sentiment[0], tmp_path, None,
                   **h.quick(lora_rank=4, lora_targets=("q", "v"), max_steps=3))
    from safetensors.torch import load_file
    assert not any("lora" in k for k in load_file(tmp_path / "model" / "model.safetensors"))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    model, tok, _ = tasks.load_model_dir(tmp_path / "model")
    enc = tok(["great"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, hf(**enc).logits, atol=1e-5)


def test_resize_token_embeddings_keeps_ties():
    model = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(44)
    emb = model.get_input_embeddings()
    assert emb.weight.shape == (44, 16) and torch.equal(emb.weight[:40], old)
    assert model.mlm.decoder.weight is emb.weight and model.mlm.decoder.bias.shape == (44,)
    assert model(torch.tensor([[43, 1, 2]])).logits.shape == (1, 3, 44) and model.config.vocab_size == 44


# --- a fine-tuned model's head, held-out examples, how long a run trains ----------------------------------------
def fine_tuned_dir(path: Path, task, labels: list[str]) -> Path:
    """A model directory of `task` whose head (random here) has `labels` in this order, as fine-tuning writes one."""
    tiny = h.tiny_model_dir()
    tok = Tokenizer.from_pretrained(tiny)
    model = prepare_model(task, tiny, tok, labels)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    task.save(path)
    return path


def head_rows(directory: Path) -> torch.Tensor:
    from safetensors.torch import load_file
    return load_file(directory / "model.safetensors")["classifier.weight"]


def ids_of(directory: Path) -> dict[str, str]:
    return json.loads((directory / "config.json").read_text())["id2label"]


CLASS_ROWS = [{"text": "a fine film", "label": "pos"}, {"text": "a waste", "label": "neg"}] * 4
NER_ROWS = [{"tokens": ["Anna", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]},
            {"tokens": ["Tom", "Smith", "left"], "tags": ["B-PER", "I-PER", "O"]}] * 4


@pytest.mark.parametrize("task, labels, rows", [
    ("classification", ["pos", "neg"], CLASS_ROWS),
    ("ner", ["O", "B-PER", "I-PER", "B-LOC"], NER_ROWS),  # (the data's own order: O, B-LOC, B-PER, I-PER)
])
def test_fine_tuning_a_fine_tuned_model_keeps_its_labels_in_their_order(tmp_path, task, labels, rows):
    """The head's row k stays label k (Hugging Face's run_glue maps the data onto the model's ids): renamed in the
    data's sorted order, a head whose row 0 is 'pos' would answer 'neg' for it."""
    src = fine_tuned_dir(tmp_path / "src", tasks.get_task(task).of(max_length=32), labels)
    data = h.write_jsonl(tmp_path / "train.jsonl", rows)
    finetune(task, src, data, tmp_path / "run", **h.quick(max_steps=1, lr=1e-12, warmup_ratio=0.0, batch_size=4))
    assert ids_of(tmp_path / "run" / "model") == {str(i): name for i, name in enumerate(labels)}
    assert torch.allclose(head_rows(tmp_path / "run" / "model"), head_rows(src), atol=1e-6)


def test_labels_the_head_lacks_are_refused_and_new_head_starts_a_head_for_the_data(tmp_path, caplog):
    from plmkit.errors import DataError
    from plmkit.models.auto import load_any
    spec = ClassificationTask.of(max_length=32)
    src = fine_tuned_dir(tmp_path / "src", spec, ["pos", "neg"])
    three = h.write_jsonl(tmp_path / "three.jsonl", [{"text": t, "label": y} for t, y in
                                                     [("good", "pos"), ("bad", "neg"), ("meh", "neutral")] * 4])
    with pytest.raises(DataError, match=r"three.jsonl: the training data has label\(s\) the head in .*src lacks: "
                                        r"neutral \(its labels: pos, neg\).*--new-head"):
        finetune("classification", src, three, tmp_path / "run", **h.quick(max_steps=1))
    finetune("classification", src, three, tmp_path / "run", **h.quick(max_steps=1, new_head=True))
    assert ids_of(tmp_path / "run" / "model") == {"0": "neg", "1": "neutral", "2": "pos"}
    tok = Tokenizer.from_pretrained(src)
    model, before = prepare_model(spec, src, tok, ["a", "b", "c"], new_head=True), load_any(src)
    assert all(torch.equal(p, model.bert.get_parameter(name)) for name, p in before.bert.named_parameters())
    assert model.classifier.weight.shape == (3, 32) and model.initialised_from_scratch
    # labels of the head that the data lacks stay (the model can still answer them), with a warning
    pos_neg = h.write_jsonl(tmp_path / "two.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    src3 = fine_tuned_dir(tmp_path / "src3", spec, ["pos", "neutral", "neg"])
    finetune("classification", src3, pos_neg, tmp_path / "run3", **h.quick(max_steps=1))
    assert ids_of(tmp_path / "run3" / "model") == {"0": "pos", "1": "neutral", "2": "neg"}
    assert "the training data has no example of neutral" in caplog.text


def test_a_head_is_never_loaded_for_other_labels_or_another_order(tmp_path):
    """What distill's --student DIR and other callers of prepare_model meet: the head's rows are not renamed."""
    spec = ClassificationTask.of(max_length=32)
    src = fine_tuned_dir(tmp_path / "src", spec, ["pos", "neg"])
    tok = Tokenizer.from_pretrained(src)
    for labels in (["neg", "pos"], ["neg", "neutral", "pos"]):
        with pytest.raises(ConfigError, match=r"src holds a classification head for the labels pos, neg \(in this "
                                              r"order\), not " + ", ".join(labels)):
            prepare_model(spec, src, tok, labels)
    assert prepare_model(spec, src, tok, ["pos", "neg"]).config.id2label == {0: "pos", 1: "neg"}


def test_new_head_is_refused_where_there_is_no_head_to_replace():
    from plmkit.recipes.distill import DistillRun
    from plmkit.recipes.finetune import build_run, run_type
    from plmkit.tasks.qa import QATask
    with pytest.raises(ConfigError, match=r"new_head \(--new-head\) replaces the head of a model directory"):
        build_run({"task": "classification", "out": "o", "data": {"train": "t.jsonl"},
                   "model": {"preset": "bert-mini", "tokenizer": "tok", "new_head": True}})
    distill = {"task": "classification", "out": "o", "data": {"train": "t.jsonl"}}
    with pytest.raises(ConfigError, match=r"new_head \(--new-head\) .* student made from the teacher keeps"):
        run_type("classification", DistillRun).build({**distill, "distill": {"teacher": "T", "init_from_teacher": True},
                                                      "model": {"new_head": True}})
    assert run_type("classification", DistillRun).build({**distill, "distill": {"teacher": "T"},
                                                         "model": {"path": "S", "new_head": True}}).model.new_head
    tiny = h.tiny_model_dir()
    with pytest.raises(ConfigError, match="new_head .* qa models have no labels"):
        prepare_model(QATask(), tiny, Tokenizer.from_pretrained(tiny), None, new_head=True)


def test_labels_and_task_settings_come_from_every_training_example_before_some_are_held_out(tmp_path):
    """--eval-fraction: a class (QA: the unanswerable question) whose examples all land in the held-out part is
    still one the model learns, and SQuAD v2 is decided by the whole file."""
    from plmkit.recipes.finetune import hold_out
    from plmkit.tasks.qa import QATask
    rows = [{"text": f"text number {i}", "label": "pos" if i % 2 else "neg"} for i in range(19)]
    rows.append({"text": "a rare one", "label": "rare"})
    seed = next(s for s in range(50) if any(r["label"] == "rare" for r in hold_out(rows, 0.2, s)[1]))
    data = h.write_jsonl(tmp_path / "rare.jsonl", rows)
    result = finetune("classification", h.tiny_model_dir(), data, tmp_path / "cls", eval_fraction=0.2, seed=seed,
                      **h.quick(max_steps=1))
    assert "rare" in ids_of(tmp_path / "cls" / "model").values() and result.eval_examples == 4
    squad = h.squad_file(tmp_path / "squad.json")
    questions = QATask().read(squad)
    seed = next(s for s in range(50)
                if not any(not q.answers for q in hold_out(questions, 0.2, s, QATask().shared_text)[0]))
    finetune("qa", h.tiny_model_dir(), squad, tmp_path / "qa", eval_fraction=0.2, seed=seed,
             **h.quick(max_steps=1, max_length=48, doc_stride=8))
    assert json.loads((tmp_path / "qa" / "model" / "plmkit_task.json").read_text())["version_2"] is True


def test_max_steps_or_a_time_budget_ends_the_run_alone_and_epochs_default_to_3_otherwise(tmp_path):
    """As Hugging Face's max_steps overrides num_train_epochs: fine-tuning's 3 epochs are for a run that says
    nothing of its length, not a hidden cap on --max-steps."""
    from plmkit.recipes.finetune import build_run

    def train(**given):
        return build_run({"task": "classification", "out": "o", "model": {"path": "m"}, "data": {"train": "t.jsonl"},
                          "train": given}).train

    assert train().epochs == 3.0 and train(max_steps=100).epochs is None and train(time_budget="10m").epochs is None
    assert (train(max_steps=100, epochs=2).epochs, train(epochs=1).max_steps) == (2.0, None)
    rows = [{"text": t, "label": y} for t, y in [("a fine film", "pos"), ("a waste", "neg")] * 12]
    data = h.write_jsonl(tmp_path / "t.jsonl", rows)  # 24 examples: 6 batches of 4 an epoch
    result = finetune("classification", h.tiny_model_dir(), data, tmp_path / "run", max_steps=20, batch_size=4,
                      device="cpu", progress_bar=False)
    assert (result.step, result.stop_reason) == (20, "max_steps")


def test_eval_fraction_holds_out_the_questions_of_a_paragraph_together():
    """--eval-fraction on QA held out single questions: a held-out question's paragraph was trained on through
    its other questions (relation extraction: a sentence through its other entity pairs)."""
    from plmkit.recipes.finetune import hold_out
    from plmkit.tasks.qa import QAExample, QATask
    from plmkit.tasks.relation import RelationExample, RelationTask
    questions = [QAExample(f"{p}-{q}", f"question {q}?", f"paragraph {p}") for p in range(10) for q in range(4)]
    for seed in range(5):
        train, held = hold_out(questions, 0.2, seed, QATask().shared_text)
        assert len(held) == 8 and not {e.context for e in train} & {e.context for e in held}
    pairs = [RelationExample(f"sentence {i // 3}", (0, 1), (2, 3), "r", i) for i in range(12)]
    train, held = hold_out(pairs, 0.25, 0, RelationTask().shared_text)
    assert len(held) == 3 and not {e.text for e in train} & {e.text for e in held}
    alone = [QAExample(str(q), "q?", "one paragraph") for q in range(5)]
    with pytest.raises(DataError, match="1 text\\(s\\) that the examples share: too few to hold out 1"):
        hold_out(alone, 0.2, 0, QATask().shared_text)
    rows = list(range(20))  # a task without shared texts: as before, a seeded fifth of the examples
    assert hold_out(rows, 0.2, 3)[1] == sorted(_shuffled(20, 3)[:4])


def _shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order



def test_with_eval_data_a_run_evaluates_at_each_epoch_s_end_whatever_the_accumulation(tmp_path):
    """10 batches accumulated by 4 over 2 epochs: 5 steps, the epochs ending in steps 3 and 5 (a step every
    10 // 4 = 2 would evaluate at steps 2 and 4, 0.8 and 1.6 epochs in); --eval-every N still says otherwise."""
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}] * 5
    data = h.write_jsonl(tmp_path / "t.jsonl", rows)

    def evaluated(out, **settings):
        finetune("classification", h.tiny_model_dir(), data, tmp_path / out, data,
                 **h.quick(epochs=2, batch_size=1, grad_accum_steps=4, **settings))
        return [r["step"] for r in map(json.loads, (tmp_path / out / "metrics.jsonl").read_text().splitlines())
                if "eval_loss" in r]

    assert evaluated("epochs") == [3, 5]
    assert evaluated("every-2", eval_every=2) == [2, 4, 5]
