"""Parity with Hugging Face transformers' BERT, in fp32: every head, padded batches, both directions."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

import plmkit.models.bert as ours  # noqa: E402
from plmkit import convert  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1)
HEADS = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction",
         "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering"]


def batch(b=3, t=11, vocab=99):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(b, t, dtype=torch.long)
    types[:, 5:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def labels_for(name, inputs, num_labels=3):
    b, t = inputs["input_ids"].shape
    g = torch.Generator().manual_seed(2)
    if name in ("BertForPreTraining", "BertForMaskedLM"):
        labels = torch.full((b, t), -100)
        labels[:, 1:4] = inputs["input_ids"][:, 1:4]
        extra = {"next_sentence_label": torch.tensor([0, 1, 0])} if name == "BertForPreTraining" else {}
        return {"labels": labels, **extra}
    if name in ("BertForNextSentencePrediction", "BertForSequenceClassification"):
        return {"labels": torch.randint(0, 2 if "Next" in name else num_labels, (b,), generator=g)}
    if name == "BertForTokenClassification":
        labels = torch.randint(0, num_labels, (b, t), generator=g)
        return {"labels": labels.masked_fill(inputs["attention_mask"] == 0, -100)}
    if name == "BertForQuestionAnswering":
        return {"start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([4, 5, 3])}
    return {}


def compare(hf_out, our_out, mask):
    keep = mask.bool()
    for field in ("last_hidden_state", "logits", "prediction_logits", "start_logits", "end_logits"):
        h = getattr(hf_out, field, None)
        if h is None:
            continue
        o = getattr(our_out, field)
        if h.dim() >= 2 and h.shape[:2] == keep.shape:  # per-token outputs: real tokens only
            h, o = h[keep], o[keep]
        torch.testing.assert_close(o, h, **TOL)
    for field in ("pooler_output", "seq_relationship_logits", "loss"):
        h = getattr(hf_out, field, None)
        if h is not None:
            torch.testing.assert_close(getattr(our_out, field), h, **TOL)


@pytest.mark.parametrize("name", HEADS)
def test_hf_checkpoint_loads_and_matches(name, tmp_path):
    torch.manual_seed(0)
    num_labels = 2 if name == "BertForQuestionAnswering" else 3  # HF's QA head has num_labels outputs
    hf = getattr(transformers, name)(transformers.BertConfig(**TINY, num_labels=num_labels)).eval()
    hf.save_pretrained(tmp_path)
    model = getattr(ours, name).from_pretrained(tmp_path)
    inputs = batch()
    labels = labels_for(name, inputs) if name != "BertForQuestionAnswering" else {}
    with torch.no_grad():
        hf_out = hf(**inputs, **labels, output_hidden_states=True, output_attentions=True)
        our_out = model(**inputs, **labels, output_hidden_states=True, output_attentions=True)
    compare(hf_out, our_out, inputs["attention_mask"])
    keep = inputs["attention_mask"].bool()
    for h, o in zip(hf_out.hidden_states, our_out.hidden_states):
        torch.testing.assert_close(o[keep], h[keep], **TOL)
    for h, o in zip(hf_out.attentions, our_out.attentions):  # real query rows; padding keys get 0 in both
        torch.testing.assert_close(o.transpose(1, 2)[keep], h.transpose(1, 2)[keep], **TOL)


def test_question_answering_loss_matches_without_padding(tmp_path):
    hf = transformers.BertForQuestionAnswering(transformers.BertConfig(**TINY)).eval()
    hf.save_pretrained(tmp_path)
    model = ours.BertForQuestionAnswering.from_pretrained(tmp_path)
    inputs = batch()
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    labels = labels_for("BertForQuestionAnswering", inputs)
    with torch.no_grad():
        compare(hf(**inputs, **labels), model(**inputs, **labels), inputs["attention_mask"])


@pytest.mark.parametrize("problem", ["regression", "multi_label_classification"])
def test_sequence_classification_problem_types(problem, tmp_path):
    n = 1 if problem == "regression" else 3
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(**TINY, num_labels=n,
                                                                            problem_type=problem)).eval()
    hf.save_pretrained(tmp_path)
    model = ours.BertForSequenceClassification.from_pretrained(tmp_path)
    inputs = batch()
    labels = torch.rand(3) if n == 1 else torch.randint(0, 2, (3, n)).float()
    with torch.no_grad():
        compare(hf(**inputs, labels=labels), model(**inputs, labels=labels), inputs["attention_mask"])


def test_sparse_prediction_gives_the_same_loss():
    model = ours.BertForPreTraining(ours.BertConfig(**TINY)).eval()
    inputs = batch()
    labels = labels_for("BertForPreTraining", inputs)
    with torch.no_grad():
        dense = model(**inputs, **labels)
        sparse = model(**inputs, **labels, sparse_prediction=True)
    torch.testing.assert_close(sparse.loss, dense.loss, **TOL)
    picked = labels["labels"] != -100
    torch.testing.assert_close(sparse.prediction_logits, dense.prediction_logits[picked], **TOL)


@pytest.mark.parametrize("name", HEADS)
def test_our_checkpoint_loads_in_hf(name, tmp_path):
    labels = ["start", "end"] if name == "BertForQuestionAnswering" else ["neg", "neu", "pos"]
    model = getattr(ours, name)(ours.BertConfig(**TINY).with_labels(labels)).eval()
    model.save_pretrained(tmp_path)
    hf = getattr(transformers, name).from_pretrained(tmp_path).eval()
    assert hf.config.id2label == dict(enumerate(labels))
    # strict: every Hugging Face parameter comes from our state dict
    hf.load_state_dict(convert.to_hf("bert", model.state_dict()), strict=True)
    inputs = batch()
    labels = labels_for(name, inputs) if name != "BertForQuestionAnswering" else {}
    with torch.no_grad():
        compare(hf(**inputs, **labels), model(**inputs, **labels), inputs["attention_mask"])


def test_real_minilm_matches_hf(minilm_dir):
    """all-MiniLM-L6-v2: the same hidden states as HF on a padded batch of English and Chinese."""
    hf = transformers.BertModel.from_pretrained(minilm_dir).eval()
    model = ours.BertModel.from_pretrained(minilm_dir)
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    texts = ["The quick brown fox jumps over the lazy dog.", "自然语言处理很有趣。",
             "A much longer sentence, with punctuation; numbers like 3.14 and names such as Shakespeare's Hamlet.",
             "Mixed 中文 and English."]
    inputs = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h, o = hf(**inputs), model(**inputs)
    compare(h, o, inputs["attention_mask"])


@pytest.mark.parametrize("name", ["BertForSequenceClassification", "BertForTokenClassification", "BertForPreTraining"])
def test_training_steps_match_hf(name, tmp_path):
    """Gradients and five AdamW steps on padded batches (dropout off) follow HF's step by step."""
    config = {**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    torch.manual_seed(0)
    hf = getattr(transformers, name)(transformers.BertConfig(**config, num_labels=3)).train()
    hf.save_pretrained(tmp_path)
    model = getattr(ours, name).from_pretrained(tmp_path).train()
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-3)
    opt_ours = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs = batch()
    labels = labels_for(name, inputs)
    for _ in range(5):
        loss_hf, loss_ours = hf(**inputs, **labels).loss, model(**inputs, **labels).loss
        torch.testing.assert_close(loss_ours, loss_hf, **TOL)
        loss_hf.backward()
        loss_ours.backward()
        grads = convert.to_hf("bert", {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        for n, p in hf.named_parameters():
            if p.grad is not None and n in grads:
                torch.testing.assert_close(grads[n], p.grad, **TOL, msg=lambda m: f"{n}: {m}")
        assert set(grads) >= {n for n, p in hf.named_parameters() if p.grad is not None and "decoder" not in n}
        for opt in (opt_hf, opt_ours):
            opt.step()
            opt.zero_grad()


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("name", ["BertForPreTraining", "BertForMaskedLM"])
def test_mlm_bias_survives_both_directions(name, tied, tmp_path):
    """The MLM output bias, tied or not: transformers 5.x's untied decoder adds its own
    cls.predictions.decoder.bias, not cls.predictions.bias. Checked through HF's from_pretrained, with
    no weight missing or unexpected, not through load_state_dict."""
    inputs = batch()
    model = getattr(ours, name)(ours.BertConfig(**TINY, tie_word_embeddings=tied)).eval()
    with torch.no_grad():
        model.mlm.decoder.bias.normal_()
    model.save_pretrained(tmp_path / "ours")
    hf, info = getattr(transformers, name).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        compare(hf.eval()(**inputs), model(**inputs), inputs["attention_mask"])

    hf = getattr(transformers, name)(transformers.BertConfig(**TINY, tie_word_embeddings=tied)).eval()
    with torch.no_grad():
        hf.cls.predictions.decoder.bias.normal_()
    hf.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        compare(hf(**inputs), getattr(ours, name).from_pretrained(tmp_path / "hf")(**inputs), inputs["attention_mask"])


def test_a_config_without_a_padding_token_loads_both_ways(tmp_path):
    """pad_token_id null (transformers 5.x allows it): no padding row, the same outputs."""
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**TINY, pad_token_id=None)).eval()
    hf.save_pretrained(tmp_path / "hf")
    model = ours.BertForMaskedLM.from_pretrained(tmp_path / "hf")
    assert model.config.pad_token_id is None and model.get_input_embeddings().padding_idx is None
    inputs = batch()
    with torch.no_grad():
        compare(hf(**inputs), model(**inputs), inputs["attention_mask"])
    model.save_pretrained(tmp_path / "ours")
    with torch.no_grad():
        compare(transformers.BertForMaskedLM.from_pretrained(tmp_path / "ours").eval()(**inputs), model(**inputs),
                inputs["attention_mask"])


@pytest.mark.parametrize("name", ["BertForMaskedLM", "BertForPreTraining", "BertLMHeadModel"])
def test_resizing_grows_an_untied_mlm_decoder_and_its_bias_as_hf(name, tmp_path):
    """tie_word_embeddings=false: resize_token_embeddings grows the masked-LM decoder (and its bias) with the
    embeddings, as Hugging Face's resize (mean_resizing=False) does: old rows and bias kept, new bias zero,
    logits as wide as the vocabulary; the resized model saves and reloads in plmkit and in transformers."""
    torch.manual_seed(0)
    config = dict(TINY, vocab_size=40, tie_word_embeddings=False, is_decoder=name == "BertLMHeadModel")
    hf = getattr(transformers, name)(transformers.BertConfig(**config)).eval()
    with torch.no_grad():
        hf.cls.predictions.decoder.bias.normal_()
    hf.save_pretrained(tmp_path / "hf")
    model = getattr(ours, name).from_pretrained(tmp_path / "hf")
    hf.resize_token_embeddings(45, mean_resizing=False)
    model.resize_token_embeddings(45)
    theirs, mine = hf.get_output_embeddings(), model.mlm.decoder
    assert mine.weight is not model.get_input_embeddings().weight
    assert mine.weight.shape == theirs.weight.shape == (45, 32) and mine.bias.shape == theirs.bias.shape == (45,)
    assert torch.equal(mine.weight[:40], theirs.weight[:40]) and torch.equal(mine.bias, theirs.bias)  # new bias 0
    assert model.config.vocab_size == hf.config.vocab_size == 45
    with torch.no_grad():  # the new rows alike (each drawn at random), so that the outputs can be compared
        model.get_input_embeddings().weight[40:] = hf.get_input_embeddings().weight[40:]
        mine.weight[40:] = theirs.weight[40:]
    inputs = batch(vocab=45)
    inputs["input_ids"][0, 1] = 44  # a new token
    logits = "prediction_logits" if name == "BertForPreTraining" else "logits"
    with torch.no_grad():
        assert getattr(model(**inputs), logits).shape[-1] == 45
        compare(hf(**inputs), model(**inputs), inputs["attention_mask"])
    model.save_pretrained(tmp_path / "ours")
    hf_again = getattr(transformers, name).from_pretrained(tmp_path / "ours").eval()
    assert hf_again.get_output_embeddings().weight.shape == (45, 32)
    with torch.no_grad():
        for reloaded in (getattr(ours, name).from_pretrained(tmp_path / "ours"), hf_again):
            compare(reloaded(**inputs), model(**inputs), inputs["attention_mask"])
