"""plmkit.compression.distill: the losses on hand-made logits, the layer map, a student made from its
teacher's layers, and what `DistillationModel` adds up."""
import math

import pytest
import torch
import torch.nn.functional as F

from plmkit.compression import distill as D
from plmkit.errors import ConfigError
from plmkit.models.bert import BertConfig, BertForSequenceClassification, BertForTokenClassification


def softmax(xs):
    e = [math.exp(x - max(xs)) for x in xs]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_soft_target_loss_on_hand_made_logits():
    teacher = [[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]
    student = [[0.0, 1.0, 0.0], [1.0, -2.0, 0.0]]
    for t in (1.0, 2.0, 4.0):
        expected = sum(kl(softmax([x / t for x in a]), softmax([x / t for x in b]))
                       for a, b in zip(teacher, student)) / 2 * t * t  # the mean over rows, times T²
        got = D.soft_target_loss(torch.tensor(student), torch.tensor(teacher), t)
        assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(D.soft_target_loss(torch.tensor(teacher), torch.tensor(teacher), 3.0)) == pytest.approx(0, abs=1e-7)


def test_temperature_scaling_keeps_the_loss_finite_at_high_temperature():
    """Hinton et al.: T² · KL tends to the mean squared difference of the zero-meaned logits / (2C)."""
    teacher, student = torch.tensor([[2.0, 0.0, -1.0, 0.5]]), torch.tensor([[0.0, 1.0, 0.0, -0.5]])
    d = (student - student.mean()) - (teacher - teacher.mean())
    limit = float((d ** 2).sum()) / (2 * 4)
    assert float(D.soft_target_loss(student, teacher, 100.0)) == pytest.approx(limit, rel=5e-3)
    assert float(D.soft_target_loss(student, teacher, 1.0)) != pytest.approx(limit, rel=1e-2)


def test_hard_label_loss_skips_records_without_labels():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]], requires_grad=True)
    labels = torch.tensor([0, -100, 1])
    expected = (-math.log(softmax([2.0, 0.0])[0]) - math.log(softmax([5.0, -5.0])[1])) / 2
    assert float(D.hard_label_loss(logits, labels).detach()) == pytest.approx(expected, rel=1e-6)
    none = D.hard_label_loss(logits, torch.full((3,), -100))
    none.backward()  # zero, but in the graph: a batch of transfer data alone still steps
    assert float(none.detach()) == 0.0 and logits.grad is not None


def test_attention_and_hidden_losses():
    p = torch.tensor([[[[0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.2, 0.3, 0.5]]]])  # (1, 1, 3, 3)
    q = torch.tensor([[[[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]]])
    real = torch.tensor([[True, True, False]])  # the last query is padding: not counted
    expected = (kl([0.5, 0.5], [0.25, 0.75]) + kl([0.9, 0.1], [0.5, 0.5])) / 2
    assert float(D.attention_loss([q], [p], real)) == pytest.approx(expected, rel=1e-6)
    two_heads = torch.cat([p, q], 1)  # (1, 2, 3, 3) against one head: the heads' mean distribution
    mean = (p + q) / 2
    assert float(D.attention_loss([p], [two_heads], real)) == pytest.approx(float(D.attention_loss([p], [mean], real)))
    h_s, h_t = torch.randn(1, 3, 4), torch.randn(1, 3, 6)
    proj = torch.nn.Linear(4, 6)
    with torch.no_grad():
        got = D.hidden_state_loss([h_s], [h_t], real, proj)
        assert float(got) == pytest.approx(float(((proj(h_s[0, :2]) - h_t[0, :2]) ** 2).mean()), rel=1e-6)


def test_layer_map():
    assert D.layer_map(3, 6) == [1, 3, 5] and D.layer_map(2, 6) == [2, 5] and D.layer_map(6, 6) == list(range(6))
    assert D.layer_map(4, 6) == [1, 2, 4, 5] and D.layer_map(1, 4) == [3]
    with pytest.raises(ConfigError, match="give 1 to 6 layers"):
        D.layer_map(7, 6)


def teacher_model(cls=BertForSequenceClassification, layers: int = 4, **config):
    torch.manual_seed(0)
    c = BertConfig(**{**dict(vocab_size=200, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, id2label={0: "a", 1: "b", 2: "c"}), **config})
    return cls(c).eval()


def test_init_from_teacher_copies_every_kth_layer_the_embeddings_and_the_head():
    teacher = teacher_model()
    student = D.student_from_teacher(teacher, 2)
    assert student.config.num_layers == 2 and type(student) is type(teacher)
    t, s = teacher.state_dict(), student.state_dict()
    for key, value in s.items():
        if ".layers." in key:
            i = int(key.split(".layers.")[1].split(".")[0])
            source = key.replace(f".layers.{i}.", f".layers.{[1, 3][i]}.")
        else:
            source = key  # embeddings, pooler, classifier
        assert torch.equal(value, t[source]), key
    assert any(k.startswith("classifier.") for k in s) and any(".embeddings." in k for k in s)
    assert D.student_from_teacher(teacher).config.num_layers == 2  # default: half
    pruned = teacher_model(pruned_heads={3: [0]}, intermediate_sizes=[64, 64, 64, 40])
    small = D.student_from_teacher(pruned, 1)  # a pruned teacher's layer keeps its sizes
    assert small.config.pruned_heads == {0: [0]} and small.config.intermediate_sizes == [40]


def seq2seq_teacher(kind: str, encoder_layers: int = 6, decoder_layers: int = 3):
    """A tiny random BART, Marian or BERT-to-BERT of `encoder_layers` + `decoder_layers` blocks."""
    from plmkit.models.bart import BartConfig, BartForConditionalGeneration
    from plmkit.models.encoder_decoder import EncoderDecoderConfig, EncoderDecoderModel
    from plmkit.models.marian import MarianConfig, MarianMTModel
    torch.manual_seed(0)
    if kind == "bert2bert":
        def bert(layers):
            return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=64)
        return EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(
            bert(encoder_layers), bert(decoder_layers), decoder_start_token_id=1, pad_token_id=0)).eval()
    cls, config = (BartForConditionalGeneration, BartConfig) if kind == "bart" else (MarianMTModel, MarianConfig)
    return cls(config(d_model=32, encoder_layers=encoder_layers, decoder_layers=decoder_layers, encoder_ffn_dim=64,
                      decoder_ffn_dim=64, encoder_attention_heads=4, decoder_attention_heads=4,
                      max_position_embeddings=64, vocab_size=100, pad_token_id=0, eos_token_id=2,
                      decoder_start_token_id=1)).eval()


def _teacher_key(key: str, stacks: dict[str, list[int]]) -> str:
    for stack, kept in stacks.items():
        if key.startswith(stack + "."):
            i, rest = key[len(stack) + 1:].split(".", 1)
            return f"{stack}.{kept[int(i)]}.{rest}"
    return key


@pytest.mark.parametrize("kind", ["bart", "marian", "bert2bert"])
def test_an_encoder_decoder_student_keeps_every_kth_block_of_each_stack(kind):
    teacher = seq2seq_teacher(kind, encoder_layers=6, decoder_layers=3)
    encoder, decoder = ("encoder.layers", "decoder.bert.layers") if kind == "bert2bert" else (
        "model.encoder.layers", "model.decoder.layers")
    for layers, kept in ((3, {encoder: [1, 3, 5], decoder: [0, 1, 2]}), (None, {encoder: [1, 3, 5], decoder: [2]}),
                         (1, {encoder: [5], decoder: [2]})):
        student = D.student_from_teacher(teacher, layers)  # (None: half of each stack)
        assert type(student) is type(teacher)
        assert [len(student.get_submodule(n)) for n in (encoder, decoder)] == [len(kept[encoder]), len(kept[decoder])]
        t = teacher.state_dict()
        for key, value in student.state_dict().items():  # each stack's blocks by its own map; the rest as it is
            assert torch.equal(value, t[_teacher_key(key, kept)]), key
    assert D.layer_stacks(teacher) == {encoder: "encoder", decoder: "decoder"}
    assert D.layers_in_words(student) == "1 encoder + 1 decoder"
    ids = torch.randint(2, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    assert student.generate(ids, max_new_tokens=3, num_beams=1).shape[0] == 2  # a working model
    with pytest.raises(ConfigError, match="a student of 4 decoder layers from a teacher of 3: give 1 to 3 decoder"):
        D.student_from_teacher(teacher, 4)


def test_an_encoder_decoder_config_keeps_each_stack_s_blocks_and_needs_both():
    bart, bert2bert = seq2seq_teacher("bart").config, seq2seq_teacher("bert2bert").config
    assert (bart.with_layers([1, 3], [2]).encoder_layers, bart.with_layers([1, 3], [2]).decoder_layers) == (2, 1)
    small = bert2bert.with_layers([5], [0, 2])
    assert (small.encoder.num_hidden_layers, small.decoder.num_hidden_layers) == (1, 2)
    assert small.decoder.is_decoder and small.decoder.add_cross_attention
    for config in (bart, bert2bert):
        with pytest.raises(ConfigError, match="give the decoder's kept blocks too"):
            config.with_layers([1, 3])
    with pytest.raises(ConfigError, match="one stack of blocks"):
        teacher_model().config.with_layers([1], [1])


def test_a_quantized_teacher_is_refused_by_name_rather_than_copied():
    from plmkit.compression.quantize import quantize_model
    from plmkit.compression.width import narrowed_student
    teacher = quantize_model(teacher_model())
    for make in (lambda: D.student_from_teacher(teacher, 2), lambda: narrowed_student(teacher, [], "example", 2, 16)):
        with pytest.raises(ConfigError, match=r"--init-from-teacher .* this teacher is quantized \(int8\): give the "
                                              r"fp32 model it was quantized from as --teacher, or .* --student DIR"):
            make()


def test_a_student_equal_to_its_teacher_has_nothing_to_learn_but_the_labels():
    teacher = teacher_model()
    student = D.student_from_teacher(teacher, 4)  # every layer: the same model
    settings = D.DistillSettings(alpha=0.3, temperature=2.0, hidden_weight=1.0, attention_weight=1.0)
    model = D.DistillationModel(student, teacher, settings, "example")
    ids = torch.randint(1, 200, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    labels = torch.tensor([0, -100, 2])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert float(out.soft) == pytest.approx(0, abs=1e-6) and float(out.hidden) == pytest.approx(0, abs=1e-10)
    assert float(out.attention) == pytest.approx(0, abs=1e-6)
    logits = teacher(input_ids=ids, attention_mask=mask).logits
    hard = D.hard_label_loss(logits, labels)
    assert float(out.loss) == pytest.approx(0.7 * float(hard), rel=1e-5)
    assert model.projection is None and not any(k.startswith("_teacher") for k in model.state_dict())


def test_a_deeper_student_learns_the_logits_alone_and_layer_losses_say_why_they_refuse_it():
    teacher, student = teacher_model(layers=2), teacher_model(layers=4)
    model = D.DistillationModel(student, teacher, D.DistillSettings(), "example")  # no layer losses: no layer map
    ids = torch.randint(1, 200, (2, 6), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.loss) and model.layers is None
    for weights, flags in (({"hidden_weight": 1.0}, "--hidden-weight"),
                           ({"attention_weight": 1.0}, "--attention-weight"),
                           ({"hidden_weight": 1.0, "attention_weight": 1.0}, "--hidden-weight and --attention-weight")):
        with pytest.raises(ConfigError, match=f"distill: {flags} compare each student layer with a teacher layer, and "
                                              f"this student has 4 layers, its teacher 2: give a student of at most 2 "
                                              f"layers, or leave {flags} off"):
            D.DistillationModel(student, teacher, D.DistillSettings(**weights), "example")


def test_a_student_whose_rows_are_other_labels_than_the_teacher_s_is_refused():
    """Soft targets are compared row by row: the student's labels must be the teacher's, in their order."""
    teacher = teacher_model(layers=2)
    for labels in ({0: "a", 1: "c", 2: "b"}, {0: "a", 1: "b"}):
        with pytest.raises(ConfigError, match=r"the student's labels a, .* are not the teacher's a, b, c \(in this "
                                              r"order\)"):
            D.DistillationModel(teacher_model(layers=1, id2label=labels), teacher, D.DistillSettings(), "example")
    D.DistillationModel(teacher_model(layers=1), teacher, D.DistillSettings(), "example")  # the same labels


def test_distillation_model_sums_its_weighted_losses_and_saves_the_student(tmp_path):
    teacher = teacher_model(BertForTokenClassification)
    torch.manual_seed(1)
    student = BertForTokenClassification(BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=32,
                                                    max_position_embeddings=32, hidden_dropout_prob=0.0,
                                                    attention_probs_dropout_prob=0.0, id2label=teacher.config.id2label))
    settings = D.DistillSettings(alpha=0.6, temperature=3.0, hidden_weight=0.5, attention_weight=2.0)
    model = D.DistillationModel(student, teacher, settings, "token")
    assert model.projection.weight.shape == (32, 16)  # widths differ: a learned projection (TinyBERT's W_h)
    ids = torch.randint(1, 200, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    labels = torch.tensor([[-100, 1, 2, -100, 0, -100], [-100] * 6])  # the second record has no labels
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    total = 0.6 * out.soft + 0.4 * out.hard + 0.5 * out.hidden + 2.0 * out.attention
    assert float(out.loss.detach()) == pytest.approx(float(total), rel=1e-6)
    s_logits = student(input_ids=ids, attention_mask=mask).logits[mask.bool()]
    t_logits = teacher(input_ids=ids, attention_mask=mask).logits[mask.bool()]
    # (the losses ran the explicit attention path, which returns the probabilities: equal to SDPA's to rounding)
    assert float(out.soft) == pytest.approx(float(D.soft_target_loss(s_logits, t_logits, 3.0).detach()), rel=1e-4)
    out.loss.backward()
    assert student.classifier.weight.grad is not None and model.projection.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    model.save_pretrained(tmp_path)
    reloaded = BertForTokenClassification.from_pretrained(tmp_path)
    assert reloaded.config.num_layers == 2 and reloaded.config.d_model == 16


def test_span_soft_targets_are_over_the_window_s_real_tokens():
    """QA: start (or end) logits (B, T) are one distribution over each window's real tokens; whatever
    sits at padding positions changes nothing."""
    teacher = [[2.0, 0.0, -1.0, 9.0], [0.5, 3.0, 7.0, -4.0]]
    student = [[0.0, 1.0, 0.0, -9.0], [1.0, -2.0, 5.0, 8.0]]
    real = torch.tensor([[True, True, True, False], [True, True, False, False]])
    for t in (1.0, 3.0):
        expected = sum(kl(softmax([x / t for x in a[:n]]), softmax([x / t for x in b[:n]]))
                       for a, b, n in zip(teacher, student, (3, 2))) / 2 * t * t
        got = D.soft_target_loss(torch.tensor(student), torch.tensor(teacher), t, real)
        assert float(got) == pytest.approx(expected, rel=1e-6)
    lowest = torch.finfo(torch.float32).min  # (how the QA head marks padding)
    masked = torch.tensor(student).masked_fill(~real, lowest).requires_grad_()
    loss = D.soft_target_loss(masked, torch.tensor(teacher).masked_fill(~real, lowest), 2.0, real)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(masked.grad).all() and not masked.grad[~real].any()


def test_qa_distillation_matches_start_and_end_and_takes_the_task_s_own_hard_loss():
    from plmkit.models.bert import BertForQuestionAnswering
    teacher = teacher_model(BertForQuestionAnswering, layers=2)
    student = D.student_from_teacher(teacher, 2)  # the same model: nothing to learn but the labels
    model = D.DistillationModel(student, teacher, D.DistillSettings(alpha=0.25, temperature=2.0), "span")
    ids = torch.randint(1, 200, (3, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    starts, ends = torch.tensor([2, 1, 0]), torch.tensor([4, 3, 0])
    real = mask.bool()

    def span_loss(rows):  # (start CE + end CE) / 2 over each window's real tokens
        with torch.no_grad():
            t = teacher(input_ids=ids[rows], attention_mask=mask[rows])
        return sum(F.cross_entropy(x.masked_fill(~real[rows], torch.finfo(torch.float32).min), gold[rows])
                   for x, gold in ((t.start_logits, starts), (t.end_logits, ends))) / 2

    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, start_positions=starts, end_positions=ends)
    own = span_loss([0, 1, 2])
    assert float(out.soft) == pytest.approx(0, abs=1e-6)
    assert float(out.hard) == pytest.approx(float(own), rel=1e-5)
    assert float(out.loss) == pytest.approx(0.75 * float(own), rel=1e-5)
    with torch.no_grad():  # the second window has no answer given (transfer data): left out of the hard loss
        part = model(input_ids=ids, attention_mask=mask, start_positions=torch.tensor([2, -100, 0]),
                     end_positions=torch.tensor([4, -100, 0]))
    kept = span_loss([0, 2])
    assert float(part.hard) == pytest.approx(float(kept), rel=1e-5)
    torch.manual_seed(1)
    other = D.DistillationModel(teacher_model(BertForQuestionAnswering, layers=1, hidden_size=16,
                                              intermediate_size=32), teacher, D.DistillSettings(temperature=2.0),
                                "span")
    with torch.no_grad():
        out = other(input_ids=ids, attention_mask=mask)  # no labels at all: soft targets only
        s, t = other.student(input_ids=ids, attention_mask=mask), teacher(input_ids=ids, attention_mask=mask)
    expected = (D.soft_target_loss(s.start_logits, t.start_logits, 2.0, real)
                + D.soft_target_loss(s.end_logits, t.end_logits, 2.0, real)) / 2
    assert float(out.soft) > 0 and float(out.soft) == pytest.approx(float(expected), rel=1e-6)
    assert float(out.hard) == 0 and float(out.loss) == pytest.approx(0.5 * float(expected), rel=1e-6)


@pytest.mark.parametrize("cls,rows", [(BertForSequenceClassification, "example"), (BertForTokenClassification, "token")])
def test_terms_weighted_by_their_own_items_add_up_to_the_whole_batch(cls, rows):
    """Each term is a mean over its own items (soft targets: rows; hard labels: labelled rows; hidden states
    and attention: real tokens), so micro-batches or processes weighted by those counts (the Trainer's
    `weighted_loss`) give the loss of the whole batch, unlabelled records and uneven lengths included."""
    from plmkit.training.trainer import item_count, weighted_loss
    teacher = teacher_model(cls)
    model = D.DistillationModel(D.student_from_teacher(teacher, 2), teacher,
                                D.DistillSettings(alpha=0.4, temperature=2.0, hidden_weight=1.0, attention_weight=0.5),
                                rows)
    ids = torch.randint(1, 200, (4, 8), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5, [1] * 6 + [0] * 2, [1] * 2 + [0] * 6])
    labels = (torch.tensor([0, -100, 2, 1]) if rows == "example"
              else torch.randint(0, 3, (4, 8), generator=torch.Generator().manual_seed(4)).masked_fill(mask == 0, -100))
    if rows == "token":
        labels[1] = -100  # an untagged sentence
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    parts = list(model.loss_items.items())
    with torch.no_grad():
        whole = model(**batch)
        pieces = [{k: v[rows_] for k, v in batch.items()} for rows_ in (slice(0, 1), slice(1, 4))]
        counts = [[item_count(p, kind) for _, kind in parts] for p in pieces]
        totals = [sum(c[i] for c in counts) for i in range(len(parts))]
        combined = sum(weighted_loss(model(**p), parts, c, totals) for p, c in zip(pieces, counts))
    assert float(whole.state_term) > 0 and float(whole.hard_term) > 0
    assert float(combined) == pytest.approx(float(whole.loss), rel=1e-5)
