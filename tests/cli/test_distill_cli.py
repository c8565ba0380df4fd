"""plmkit distill end to end on tiny models: classification with unlabelled transfer records and a
student made from the teacher's layers, NER from a preset with an untagged CoNLL file, and sequence-level
distillation of a causal LM (sft) from the replies its teacher writes."""
import json
import sys
from pathlib import Path

import pytest
import torch

import compression_helpers as ch
import finetune_helpers as h
from plmkit.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from clm_model import save_tiny_model  # noqa: E402


def test_distil_a_classifier_from_labelled_and_unlabelled_records(tmp_path, capsys):
    teacher, test = ch.sentiment_dir()
    rows = h.data_dir("en-sentiment").joinpath("movie_reviews.train.jsonl").read_text().splitlines()[:48]
    transfer = tmp_path / "transfer.jsonl"  # every other record without its label: soft targets only
    transfer.write_text("\n".join(r if i % 2 else json.dumps({"text": json.loads(r)["text"]})
                                  for i, r in enumerate(rows)) + "\n")
    out = tmp_path / "student"
    assert main(["distill", "--task", "classification", "--teacher", str(teacher), "--init-from-teacher",
                 "--student-layers", "1", "--train", str(transfer), "--eval", str(test), "--out", str(out),
                 "--max-steps", "3", "--batch-size", "16", "--temperature", "3", "--alpha", "0.8",
                 "--hidden-weight", "1", "--attention-weight", "1", "--device", "cpu", "--no-progress",
                 "--batch-sizes", "1,4"]) == 0
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["id2label"] == json.loads(
        (teacher / "config.json").read_text())["id2label"]
    from plmkit.recipes.finetune import load_run
    from plmkit.recipes.distill import DistillRun
    run = load_run(out / "run.yaml", base=DistillRun)  # the effective run file reads back
    assert (run.distill.teacher, run.distill.temperature, run.distill.student_layers) == (str(teacher), 3.0, 1)
    report = json.loads((out / "compression_report.json").read_text())
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert "accuracy" in report["after"]["metric"] and "x smaller" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(test), "--device", "cpu"]) == 0
    assert main(["distill", "--task", "ner", "--teacher", str(teacher), "--init-from-teacher", "--train",
                 str(transfer), "--out", str(tmp_path / "x")]) != 0
    assert "is a classification model, not ner: give --task classification" in capsys.readouterr().err
    assert main(["distill", "--task", "classification", "--teacher", str(teacher), "--train", str(transfer),
                 "--out", str(tmp_path / "y")]) != 0
    assert "say the student: --student DIR, --student-preset NAME or --init-from-teacher" in capsys.readouterr().err


def test_a_student_with_a_head_for_other_labels_starts_a_new_one_for_the_teacher_s(tmp_path, capsys):
    """--student DIR fine-tuned for other labels: refused (its rows would answer for other classes than the
    teacher's soft targets) unless --new-head starts its head anew, for the teacher's labels in their order."""
    from plmkit.recipes.finetune import finetune
    teacher, test = ch.sentiment_dir()
    texts = [json.loads(line)["text"] for line in test.read_text().splitlines()[:24]]
    other = h.write_jsonl(tmp_path / "other.jsonl", [{"text": t, "label": "abc"[i % 3]} for i, t in enumerate(texts)])
    finetune("classification", h.tiny_model_dir(), other, tmp_path / "abc", None, **h.quick(max_steps=1))
    args = ["distill", "--task", "classification", "--teacher", str(teacher), "--student",
            str(tmp_path / "abc" / "model"), "--train", str(test), "--out", str(tmp_path / "student"),
            "--max-steps", "2", "--batch-size", "8", "--device", "cpu", "--no-progress", "--no-report"]
    assert main(args) != 0
    assert "holds a classification head for the labels a, b, c" in capsys.readouterr().err
    assert main(args + ["--new-head"]) == 0
    labels = json.loads((teacher / "config.json").read_text())["id2label"]
    assert json.loads((tmp_path / "student" / "model" / "config.json").read_text())["id2label"] == labels
    assert main(args + ["--new-head", "--train", str(other), "--out", str(tmp_path / "x")]) != 0
    assert "unknown label 'a'; the model knows negative, positive" in capsys.readouterr().err


def ner_teacher(root: Path) -> Path:
    """A random tiny BERT token classifier saved as a fine-tuned NER model directory."""
    from plmkit.models.bert import BertConfig, BertForTokenClassification
    from plmkit.tasks.ner import NerTask
    from plmkit.tokenization import Tokenizer
    tokenizer = Tokenizer.from_pretrained(h.tiny_model_dir())
    torch.manual_seed(0)
    tags = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    model = BertForTokenClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=2, intermediate_size=64,
                                                  max_position_embeddings=128, id2label=dict(enumerate(tags))))
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    NerTask.of(max_length=64, scheme="BIO").save(root)
    return root


def test_distil_a_tagger_from_a_preset_on_untagged_sentences(tmp_path):
    teacher = ner_teacher(tmp_path / "teacher")
    tagged = tmp_path / "tagged.conll"
    tagged.write_text("Paris\tB-LOC\nis\tO\nnice\tO\n\nAnna\tB-PER\nSmith\tI-PER\nwrites\tO\n")
    untagged = tmp_path / "untagged.conll"  # one column: transfer data
    untagged.write_text("Berlin\nis\nlarge\n\nBob\nreads\n\nthe\nriver\nflows\n")
    out = tmp_path / "student"
    assert main(["distill", "--task", "ner", "--teacher", str(teacher), "--student-preset", "bert-tiny",
                 "--train", str(untagged), "--eval", str(tagged), "--out", str(out), "--max-steps", "2",
                 "--batch-size", "2", "--device", "cpu", "--no-progress", "--no-report"]) == 0
    saved = json.loads((out / "model" / "plmkit_task.json").read_text())
    assert saved["task"] == "ner" and saved["scheme"] == "BIO" and saved["max_length"] == 64  # the teacher's
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["hidden_size"] == 128 and len(config["id2label"]) == 5
    assert main(["distill", "--task", "ner", "--teacher", str(teacher), "--student-preset", "bert-tiny",
                 "--train", str(tagged), "--eval", str(tagged), "--out", str(tmp_path / "s2"), "--max-steps", "1",
                 "--batch-size", "2", "--max-length", "32", "--device", "cpu", "--no-progress", "--no-report"]) == 0
    assert json.loads((tmp_path / "s2" / "model" / "plmkit_task.json").read_text())["max_length"] == 32


def test_sequence_level_distillation_of_a_causal_lm(tmp_path, caplog):
    from plmkit.models.gpt2 import GPT2LMHeadModel
    from plmkit.tasks.sft import SFTTask
    from plmkit.tokenization import Tokenizer
    teacher = save_tiny_model(tmp_path / "teacher")
    rough = GPT2LMHeadModel.from_pretrained(teacher)  # (the tiny random model's replies are blank lines)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in rough.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    rough.save_pretrained(teacher)
    SFTTask.of(max_length=48).save(teacher)
    prompts = tmp_path / "prompts.jsonl"  # prompts alone: the teacher writes the replies
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("hello there", "what is a cat", "say a word")))
    task, tok = SFTTask.of(max_length=48), Tokenizer.from_pretrained(teacher)
    model = GPT2LMHeadModel.from_pretrained(teacher)
    written = task.teacher_targets(model, tok, task.read(prompts, labelled=False), batch_size=1)
    assert len(written) == 3  # (in batches of several, every reply stops where the longest prompt's must)
    from plmkit.chat import encode_text, format_system, format_user
    for record in written:  # each reply is the teacher's greedy continuation of its prompt
        ids = torch.tensor(encode_text(tok, format_system(None) + format_user(record["prompt"])))
        new = model.generate(ids, max_new_tokens=48 - len(ids), eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)[len(ids):]
        assert record["response"] == tok.decode(new.tolist(), skip_special_tokens=True).strip()
    out = tmp_path / "student"
    assert main(["distill", "--task", "sft", "--teacher", str(teacher), "--init-from-teacher", "--student-layers",
                 "1", "--train", str(prompts), "--out", str(out), "--max-steps", "2", "--device", "cpu",
                 "--no-progress", "--no-report", "--eval-batch-size", "2"]) == 0
    assert json.loads((out / "model" / "config.json").read_text())["n_layer"] == 1
    assert main(["distill", "--task", "sft", "--teacher", str(teacher), "--init-from-teacher", "--train",
                 str(prompts), "--out", str(tmp_path / "t"), "--temperature", "3", "--no-report"]) != 0


@pytest.mark.parametrize("task,fields", [("translation", ("source", "target")), ("summarization", ("text", "summary"))])
def test_sequence_level_distillation_of_an_encoder_decoder_into_a_student_of_its_layers(task, fields, tmp_path):
    from onnx_helpers import TEXTS, task_dir  # a random 2 + 2-layer Marian, or BERT-to-BERT
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({fields[0]: t}) + "\n" for t in TEXTS))  # sources alone: the teacher writes
    out = tmp_path / "student"
    assert main(["distill", "--task", task, "--teacher", str(task_dir(task)), "--init-from-teacher", "--train",
                 str(train), "--out", str(out), "--max-steps", "1", "--device", "cpu", "--no-progress",
                 "--no-report"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    halves = (config["encoder_layers"], config["decoder_layers"]) if task == "translation" else (
        config["encoder"]["num_hidden_layers"], config["decoder"]["num_hidden_layers"])
    assert halves == (1, 1)  # half of each stack


def test_sequence_level_distillation_of_a_chat_teacher_whose_tokenizer_has_no_pad_token(tmp_path):
    """The teacher pads its prompts with its eos token (a pad token added to the tokenizer would lie beyond its
    embeddings); the student made from it gets the pad token, and its embedding row, as a loaded one does."""
    from clm_helpers import corpus_text
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    from plmkit.tasks.sft import SFTTask
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.train_bpe([corpus_text(), "<|user|>\nhello\n<|assistant|>\nhi there"], 400,
                              special_tokens=("<|endoftext|>",), model_max_length=128)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tok), n_positions=64,
                                                   eos_token_id=tok.eos_token_id))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # (replies that run long)
    teacher = tmp_path / "teacher"
    model.save_pretrained(teacher)
    tok.save_pretrained(teacher)
    SFTTask.of(max_length=48).save(teacher)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("hello there", "what is a cat", "say a word",
                                                                          "good morning to all of you")))
    out = tmp_path / "student"
    assert main(["distill", "--task", "sft", "--teacher", str(teacher), "--init-from-teacher", "--train", str(prompts),
                 "--out", str(out), "--max-steps", "1", "--batch-size", "2", "--eval-batch-size", "4", "--device",
                 "cpu", "--no-progress", "--no-report"]) == 0
    student = Tokenizer.from_pretrained(out / "model")
    assert student.pad_token_id == 400 and json.loads((out / "model" / "config.json").read_text())["vocab_size"] == 401


def test_distil_a_classifier_into_a_narrower_student_of_the_teacher_s_weights(tmp_path, capsys):
    teacher, test = ch.sentiment_dir()  # 2 layers, 32 wide: 2 heads of 16, 64 neurons
    rows = h.data_dir("en-sentiment").joinpath("movie_reviews.train.jsonl").read_text().splitlines()[:40]
    train = tmp_path / "train.jsonl"  # the first 16 labelled (the heads' and neurons' scores), then transfer data
    train.write_text("\n".join(r if i < 16 else json.dumps({"text": json.loads(r)["text"]})
                               for i, r in enumerate(rows)) + "\n")
    out = tmp_path / "student"
    args = ["distill", "--task", "classification", "--teacher", str(teacher), "--init-from-teacher", "--student-layers",
            "1", "--train", str(train), "--out", str(out), "--max-steps", "2", "--batch-size", "8", "--device", "cpu",
            "--no-progress", "--no-report"]
    assert main(args + ["--student-hidden", "16", "--student-ffn", "24", "--selection-examples", "16",
                        "--hidden-weight", "1"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["intermediate_size"]) == (1, 16, 1, 24)
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(test), "--device", "cpu"]) == 0
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text("\n".join(json.dumps({"text": json.loads(r)["text"]}) for r in rows) + "\n")
    capsys.readouterr()
    refused = [(["--student-hidden", "20"], "--student-hidden) 20: give a multiple of the teacher's head size 16"),
               (["--student-hidden", "16", "--student-heads", "2"], "--student-heads) 2: heads keep"),
               (["--student-ffn", "128"], "--student-ffn) 128: the teacher's layers have 64"),
               (["--student-hidden", "16", "--train", str(unlabelled)],
                "(the first selection_examples (--selection-examples) of --train) has a label")]
    for i, (bad, message) in enumerate(refused):
        assert main(args + bad + ["--out", str(tmp_path / f"refused-{i}")]) != 0
        assert message in capsys.readouterr().err, bad


@pytest.mark.parametrize("bad", [["--student", "x", "--init-from-teacher"], ["--student-layers", "2"],
                                 ["--student-hidden", "16"]])
def test_contradicting_student_flags_are_refused(bad, tmp_path, capsys):
    teacher, _ = ch.sentiment_dir()
    args = ["distill", "--task", "classification", "--teacher", str(teacher), "--train", "t.jsonl", "--out",
            str(tmp_path / "o")] + bad
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "--init-from-teacher" in err


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_distil_extractive_qa_into_a_student_of_the_teacher_s_layers(tmp_path, capsys):
    """Start and end distributions over each window's tokens; a question without answers (and not
    marked impossible) is transfer data; the student's EM/F1 are reported."""
    from plmkit.recipes.finetune import finetune
    squad = h.squad_file(tmp_path / "squad.json")
    finetune("qa", h.tiny_model_dir(), squad, tmp_path / "teacher", None, **h.quick(max_steps=4, batch_size=4,
                                                                                       max_length=48))
    teacher = tmp_path / "teacher" / "model"
    doc = json.loads(squad.read_text())
    del doc["data"][0]["paragraphs"][1]["qas"][0]["answers"]  # unlabelled: soft targets only
    transfer = tmp_path / "transfer.json"
    transfer.write_text(json.dumps(doc))
    out = tmp_path / "student"
    assert main(["distill", "--task", "qa", "--teacher", str(teacher), "--init-from-teacher", "--student-layers", "1",
                 "--train", str(transfer), "--eval", str(squad), "--out", str(out), "--max-steps", "3",
                 "--batch-size", "4", "--temperature", "2", "--hidden-weight", "1", "--device", "cpu",
                 "--no-progress", "--no-report"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config.get("id2label") == json.loads(
        (teacher / "config.json").read_text()).get("id2label")  # (no label names imposed on a span head)
    assert json.loads((out / "model" / "plmkit_task.json").read_text())["max_length"] == 48  # the teacher's
    evaluated = [r for r in _metrics(out) if "eval_f1" in r]
    assert evaluated and 0 <= evaluated[-1]["eval_f1"] <= 100 and "eval_exact_match" in evaluated[-1]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(squad), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(evaluated[-1]["eval_f1"])


def test_distil_relations_into_a_pretrained_student_that_lacks_the_markers(tmp_path):
    """--student DIR: a plain pretrained encoder gets the entity markers as fine-tuning gives them, after
    which its vocabulary is the teacher's; records without a relation are transfer data."""
    from plmkit.recipes.finetune import finetune
    rows = h.relation_file(tmp_path / "rel.jsonl")
    finetune("relation", h.tiny_model_dir(), rows, tmp_path / "teacher", None, **h.quick(max_steps=3, batch_size=3))
    teacher = tmp_path / "teacher" / "model"
    transfer = tmp_path / "transfer.jsonl"
    transfer.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "relation" or i % 2})
                                + "\n" for i, r in enumerate(h.RELATIONS)))
    out = tmp_path / "student"
    assert main(["distill", "--task", "relation", "--teacher", str(teacher), "--student", str(h.tiny_model_dir()),
                 "--train", str(transfer), "--eval", str(rows), "--out", str(out), "--max-steps", "3",
                 "--batch-size", "3", "--alpha", "0.7", "--device", "cpu", "--no-progress", "--no-report"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == json.loads((teacher / "config.json").read_text())["id2label"]
    assert config["vocab_size"] == json.loads((teacher / "config.json").read_text())["vocab_size"]
    evaluated = [r for r in _metrics(out) if "eval_f1" in r]
    assert evaluated and 0 <= evaluated[-1]["eval_f1"] <= 1
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(rows), "--device", "cpu"]) == 0
    small = tmp_path / "student-of-the-teacher"  # and from the teacher's own layers
    assert main(["distill", "--task", "relation", "--teacher", str(teacher), "--init-from-teacher",
                 "--student-layers", "1", "--train", str(rows), "--out", str(small), "--max-steps", "2",
                 "--batch-size", "3", "--device", "cpu", "--no-progress", "--no-report"]) == 0
    assert json.loads((small / "model" / "config.json").read_text())["num_hidden_layers"] == 1
