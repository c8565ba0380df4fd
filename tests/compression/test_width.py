"""plmkit.compression.width: a student narrowed from its teacher's weights: its sizes and their refusals,
the heads and neurons (the most important) and channels (the largest LayerNorm scales) it keeps, the
whole width equal to the teacher, a subset saved and loaded."""
import json

import pytest
import torch

from plmkit.compression import distill as D
from plmkit.compression import width as W
from plmkit.compression.prune import importance
from plmkit.errors import ConfigError
from plmkit.models.auto import AutoModelForSequenceClassification
from plmkit.models.bert import BertConfig, BertForSequenceClassification, BertForTokenClassification


def teacher_model(cls=BertForSequenceClassification, **config):
    """4 layers, 32 wide: 4 heads of 8, 64 feed-forward neurons, 3 labels."""
    torch.manual_seed(0)
    c = BertConfig(**{**dict(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, id2label={0: "a", 1: "b", 2: "c"}), **config})
    model = cls(c).eval()
    with torch.no_grad():  # LayerNorm scales and biases of their own, so that channels differ
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.2, 2.0)
                m.bias.normal_(0, 0.5)
    return model


def batches(n: int = 3, labelled: bool = True) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 120, (4, 9), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        labels = torch.randint(0, 3, (4,), generator=g) if labelled else torch.full((4,), -100)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def test_the_width_s_defaults_and_what_a_teacher_cannot_give():
    teacher = teacher_model()
    assert W.student_width(teacher, [1, 3]) == W.Width(32, 4, 64)  # the teacher's
    assert W.student_width(teacher, [1, 3], hidden=16) == W.Width(16, 2, 32)  # heads fill it, ffn scaled
    assert W.student_width(teacher, [1, 3], hidden=16, heads=1, ffn=40) == W.Width(16, 1, 40)
    for sizes, message in [(dict(hidden=64), "student_hidden \\(--student-hidden\\) 64: .* at most its width 32"),
                           (dict(hidden=12), "a multiple of the teacher's head size 8"),
                           (dict(hidden=16, heads=3), "--student-heads\\) 3: .* holds at most 2"),
                           (dict(ffn=65), "--student-ffn\\) 65: the teacher's layers have 64")]:
        with pytest.raises(ConfigError, match=message):
            W.student_width(teacher, [1, 3], **sizes)
    pruned = teacher_model(pruned_heads={3: [0, 1]}, intermediate_sizes=[64, 64, 64, 48])
    assert W.student_width(pruned, [1, 3]) == W.Width(32, 2, 48)  # what every kept layer has
    with pytest.raises(ConfigError, match="the teacher's layers have 2"):
        W.student_width(pruned, [1, 3], heads=3)
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16))
    with pytest.raises(ConfigError, match="cannot narrow gpt2 models"):
        W.student_width(gpt2, [1], hidden=8)


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForTokenClassification])
def test_a_student_that_keeps_everything_computes_what_its_teacher_computes(cls):
    teacher = teacher_model(cls)
    rows = "token" if cls is BertForTokenClassification else "example"
    data = [{**b, "labels": b["labels"][:, None].expand(4, 9).clone()} for b in batches()] if rows == "token" \
        else batches()
    student, channels = W.narrowed_student(teacher, data, rows, layers=4, hidden=32, heads=4, ffn=64)
    assert torch.equal(channels, torch.arange(32))
    with torch.no_grad():
        for b in batches():
            inputs = {k: b[k] for k in ("input_ids", "attention_mask")}
            torch.testing.assert_close(student.eval()(**inputs).logits, teacher(**inputs).logits, atol=1e-5, rtol=0)


def test_the_student_keeps_the_most_important_heads_and_neurons_and_the_largest_scaled_channels():
    teacher = teacher_model()
    student, channels = W.narrowed_student(teacher, batches(), "example", layers=2, hidden=16, heads=1, ffn=24)
    scores = importance(W.LabelledLoss(teacher, "example"), batches())
    scales = sum(m.weight.detach().abs() for m in teacher.modules() if isinstance(m, torch.nn.LayerNorm))  # (32,)
    assert torch.equal(channels, scales.topk(16).indices.sort().values)
    t, s = teacher.state_dict(), student.state_dict()
    for i, k in enumerate(D.layer_map(2, 4)):  # student layer i is teacher layer k, cut
        head = int(scores.heads[k].argmax())
        neurons = scores.neurons[k].topk(24).indices.sort().values
        q = t[f"bert.layers.{k}.attn.q.weight"][head * 8:(head + 1) * 8][:, channels]
        assert torch.equal(s[f"bert.layers.{i}.attn.q.weight"], q)
        assert torch.equal(s[f"bert.layers.{i}.attn.out.weight"], t[f"bert.layers.{k}.attn.out.weight"][channels][
            :, head * 8:(head + 1) * 8])
        assert torch.equal(s[f"bert.layers.{i}.mlp.fc_in.weight"], t[f"bert.layers.{k}.mlp.fc_in.weight"][neurons][
            :, channels])
        assert torch.equal(s[f"bert.layers.{i}.mlp_norm.bias"], t[f"bert.layers.{k}.mlp_norm.bias"][channels])
    for key, cut in [("bert.embeddings.word.weight", lambda w: w[:, channels]),
                     ("bert.embeddings.position.weight", lambda w: w[:, channels]),
                     ("bert.embeddings.norm.weight", lambda w: w[channels]),
                     ("bert.pooler.dense.weight", lambda w: w[channels][:, channels]),
                     ("bert.pooler.dense.bias", lambda w: w[channels]),
                     ("classifier.weight", lambda w: w[:, channels]), ("classifier.bias", lambda w: w)]:
        assert torch.equal(s[key], cut(t[key])), key


def test_a_narrowed_student_saves_and_loads_as_any_bert(tmp_path):
    teacher = teacher_model()
    student, _ = W.narrowed_student(teacher, batches(), "example", layers=2, hidden=16, heads=1, ffn=24)
    student.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (16, 2, 24)
    assert config["num_attention_heads"] == 2 and config["pruned_heads"] == {"0": [1], "1": [1]}  # 1 head of 8
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = {k: batches()[0][k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, student.eval()(**inputs).logits, atol=1e-6, rtol=0)
    two, _ = W.narrowed_student(teacher, batches(), "example", layers=2, hidden=16)  # heads fill the width
    assert two.config.pruned_heads is None and two.config.num_attention_heads == 2
    transformers = pytest.importorskip("transformers")  # then it is a plain BERT of the smaller sizes
    two.save_pretrained(tmp_path / "two")
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "two").eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**inputs).logits, two.eval()(**inputs).logits, atol=1e-5, rtol=0)


def test_heads_are_ranked_on_labelled_records_only():
    teacher = teacher_model()
    mixed = [*batches(2, labelled=False), *batches(1)]
    only = importance(W.LabelledLoss(teacher, "example"), batches(1))
    assert all(torch.allclose(a, b) for a, b in
               zip(importance(W.LabelledLoss(teacher, "example"), mixed).heads, only.heads))
    with pytest.raises(ConfigError, match="ranked by its loss on labelled records"):
        W.narrowed_student(teacher, batches(2, labelled=False), "example", layers=2, hidden=16)


def test_a_narrowed_student_learns_the_teacher_s_states_at_its_channels():
    teacher = teacher_model()
    student, channels = W.narrowed_student(teacher, batches(), "example", layers=4, hidden=32)
    settings = D.DistillSettings(hidden_weight=1.0)
    model = D.DistillationModel(student, teacher, settings, "example", channels)
    with torch.no_grad():
        assert float(model(**batches()[0]).hidden) == pytest.approx(0, abs=1e-10)  # whole width: the same states
    narrow, kept = W.narrowed_student(teacher, batches(), "example", layers=2, hidden=16)
    model = D.DistillationModel(narrow, teacher, settings, "example", kept)
    assert model.projection is None and torch.equal(model.state_dict()["channels"], kept)  # (resumes with it)
    b = batches()[0]
    real = b["attention_mask"].bool()
    with torch.no_grad():
        out = model(**b)
        s = narrow(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        t = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
    expected = D.hidden_state_loss([s.hidden_states[0], s.hidden_states[1], s.hidden_states[2]],
                                   [t.hidden_states[0][..., kept], t.hidden_states[2][..., kept],
                                    t.hidden_states[4][..., kept]], real, None)
    assert float(out.hidden) == pytest.approx(float(expected), rel=1e-6)
