"""BERT behaviour: padding invariance, causal masking, configs, checkpoints and their errors."""
import json

import pytest
import torch

from plmkit.errors import CheckpointError, ConfigError, PlmkitError
from plmkit.models import (AutoModel, AutoModelForSequenceClassification, BertConfig, BertForMaskedLM,
                           BertForSequenceClassification, BertModel)
from plmkit.models.auto import load_any

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16)


def test_padding_does_not_change_real_tokens():
    model = BertModel(BertConfig(**TINY)).eval()
    ids = torch.randint(1, 50, (1, 6))
    alone = model(ids).last_hidden_state
    padded_ids = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    both = model(torch.cat([padded_ids, torch.randint(1, 50, (1, 10))]), torch.cat([mask, torch.ones(1, 10, dtype=torch.long)]))
    torch.testing.assert_close(both.last_hidden_state[0, :6], alone[0], atol=1e-5, rtol=1e-5)
    assert both.last_hidden_state[0, 6:].abs().max() == 0  # padding outputs are zeros, never garbage


def test_pre_ln_option_and_presets():
    cfg = BertConfig.from_preset("bert-mini", vocab_size=100, norm_first=True)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (4, 256, 4)
    out = BertModel(cfg).eval()(torch.randint(0, 100, (2, 5)))
    assert out.last_hidden_state.shape == (2, 5, 256)
    with pytest.raises(ConfigError, match="unknown preset"):
        BertConfig.from_preset("bert-huge")


def test_config_rejects_unknown_and_invalid_keys():
    with pytest.raises(ConfigError, match="'hidden_sise'"):
        BertConfig.from_dict({"hidden_sise": 4})
    with pytest.raises(ConfigError, match="divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="relative_key"):
        BertConfig(position_embedding_type="relative_key")


def test_overlong_input_is_a_clear_error():
    model = BertModel(BertConfig(**TINY))
    with pytest.raises(PlmkitError, match="at most 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_base_checkpoint_into_task_model_initialises_head(tmp_path, caplog):
    base = BertModel(BertConfig(**TINY))
    base.save_pretrained(tmp_path)
    clf = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    torch.testing.assert_close(clf.bert.embeddings.word.weight, base.embeddings.word.weight)
    assert clf.config.num_labels == 3
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path, id2label={0: "neg", 1: "pos"})
    assert auto.config.id2label == {0: "neg", 1: "pos"}


def test_untied_mlm_decoder_missing_from_the_checkpoint_is_reported(tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    BertForMaskedLM(BertConfig(**TINY, tie_word_embeddings=False)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["cls.predictions.decoder.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with caplog.at_level("INFO", logger="plmkit"):
        BertForMaskedLM.from_pretrained(tmp_path)
    assert "initialised mlm.decoder from scratch" in caplog.text


def test_a_new_head_is_a_warning_so_python_shows_it_without_logging_set_up(tmp_path, caplog):
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="plmkit"):  # what Python shows by default (logging's last resort)
        BertForSequenceClassification.from_pretrained(tmp_path)
    assert "BertForSequenceClassification: initialised classifier from scratch" in caplog.text


def test_task_checkpoint_into_base_model_and_auto(tmp_path):
    mlm = BertForMaskedLM(BertConfig(**TINY))
    mlm.save_pretrained(tmp_path)
    assert type(load_any(tmp_path)).__name__ == "BertForMaskedLM"
    base = AutoModel.from_pretrained(tmp_path)
    torch.testing.assert_close(base.layers[1].mlp.fc_in.weight, mlm.bert.layers[1].mlp.fc_in.weight)


def test_mismatched_shapes_name_the_key(tmp_path):
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    # named as the file names it, ours in brackets
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight "
                                              r"\(layers\.0\.mlp\.fc_in\.weight\): \(64, 32\) in the checkpoint, "
                                              r"\(48, 32\) in the model"):
        BertModel.from_pretrained(tmp_path)


def test_missing_body_weights_are_an_error(tmp_path):
    BertModel(BertConfig(**{**TINY, "num_hidden_layers": 1})).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_hidden_layers"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing: encoder\.layer\.1\.\S+ \(layers\.1\."):
        BertModel.from_pretrained(tmp_path)


def test_corrupt_config_missing_weights_and_hub_ids(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert",\n "hidden_size": }')
    with pytest.raises(ConfigError, match=r"config.json:2:"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(BertConfig(**TINY).to_dict()))
    with pytest.raises(CheckpointError, match="no weights file"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        BertModel.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="local directories"):
        BertModel.from_pretrained("bert-base-uncased")


def test_pytorch_bin_loads_without_unpickling_code(tmp_path):
    model = BertModel(BertConfig(**TINY))
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    loaded = BertModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.pooler.dense.weight, model.pooler.dense.weight)


def test_pytorch_bin_with_code_is_refused_with_a_checkpoint_error(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    BertModel(BertConfig(**TINY)).config.save(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(CheckpointError, match="does not unpickle"):
        BertModel.from_pretrained(tmp_path)


def test_outputs_index_like_hf():
    model = BertForSequenceClassification(BertConfig(**TINY)).eval()
    out = model(torch.randint(0, 50, (2, 4)), labels=torch.tensor([0, 1]))
    assert out[0] is out.loss and out["logits"] is out.logits


def test_broadcast_position_and_token_type_ids_with_padding():
    """position_ids / token_type_ids of shape (T,) or (1, T) broadcast over a padded batch, as in HF."""
    model = BertModel(BertConfig(**TINY)).eval()
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    types = torch.tensor([[0, 0, 0, 1, 1, 1]])
    with torch.no_grad():
        full = model(ids, mask, types.expand(2, 6), torch.arange(6).expand(2, 6)).last_hidden_state
        for pos in (torch.arange(6), torch.arange(6)[None]):
            out = model(ids, mask, types, pos).last_hidden_state
            torch.testing.assert_close(out, full)


def _mlm_batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 50, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, [1, 5]] = ids[0, [1, 5]]
    labels[1, 2] = ids[1, 2]
    labels[2, 0] = ids[2, 0]
    return dict(input_ids=ids, attention_mask=mask, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("name", ["BertForPreTraining", "BertForMaskedLM"])
def test_training_call_with_labels_computes_the_loss_at_labelled_positions_only(name):
    """The HF-style training call takes the sparse path: no logits, the dense path's loss and gradients."""
    from plmkit import models
    torch.manual_seed(0)
    model = getattr(models, name)(BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    batch = _mlm_batch()
    if name == "BertForMaskedLM":
        del batch["next_sentence_label"]
    logits_of = (lambda out: out.prediction_logits) if name == "BertForPreTraining" else (lambda out: out.logits)
    runs = {}
    for kind, kwargs in (("fast", {}), ("dense", {"return_logits": True})):
        model.zero_grad()
        out = model(**batch, **kwargs)
        out.loss.backward()
        runs[kind] = out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    (fast, fast_grads), (dense, dense_grads) = runs["fast"], runs["dense"]
    assert model.training and logits_of(fast) is None
    assert logits_of(dense).shape == (3, 10, 50)
    torch.testing.assert_close(fast.loss, dense.loss, atol=1e-5, rtol=1e-5)
    assert fast_grads.keys() == dense_grads.keys()
    for n in dense_grads:
        torch.testing.assert_close(fast_grads[n], dense_grads[n], atol=1e-5, rtol=1e-5, msg=n)

    picked = batch["labels"] != -100
    sparse = model(**batch, sparse_prediction=True)  # the (M, V) rows, in row-major order
    torch.testing.assert_close(logits_of(sparse), logits_of(dense)[picked], atol=1e-5, rtol=1e-5)
    assert logits_of(model(**batch, sparse_prediction=True, return_logits=False)) is None
    no_labels = {k: v for k, v in batch.items() if k not in ("labels", "next_sentence_label")}
    assert logits_of(model(**no_labels)).shape == (3, 10, 50)
    model.eval()  # eval mode: the (B, T, V) logits, as Hugging Face
    with torch.no_grad():
        evaluated = model(**batch)
        assert logits_of(evaluated).shape == (3, 10, 50)
        torch.testing.assert_close(evaluated.loss, dense.loss, atol=1e-5, rtol=1e-5)
        assert logits_of(model(**batch, return_logits=False)) is None


def test_bad_inputs_are_named_before_any_lookup():
    from plmkit.errors import InputError
    from plmkit.models.bert import BertConfig, BertModel
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=8)).eval()
    ids = torch.tensor([[2, 5, 6, 7]])
    for kwargs, message in [(dict(input_ids=torch.tensor([2, 5, 6])), r"must be \(batch, length\)"),
                            (dict(input_ids=ids.float()), "input_ids must hold integer ids"),
                            (dict(input_ids=[[2, 5]]), "input_ids must be a tensor of ids, got list"),
                            (dict(input_ids=torch.tensor([[2, 50]])), r"input_ids holds 50, outside 0 .. 49"),
                            (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "length >= 1"),
                            (dict(input_ids=ids, token_type_ids=torch.full((1, 4), 2)), "token_type_ids holds 2"),
                            (dict(input_ids=ids, token_type_ids=torch.zeros(1, 3, dtype=torch.long)),
                             r"token_type_ids has shape \(1, 3\)"),
                            (dict(input_ids=ids, position_ids=torch.tensor([0, 1, 2, 8])), "position_ids holds 8"),
                            (dict(input_ids=ids, attention_mask=torch.ones(1, 3, dtype=torch.long)),
                             r"attention_mask has shape \(1, 3\), but the input ids are \(1, 4\)"),
                            (dict(input_ids=ids, attention_mask=torch.tensor([[1, 1, 3, 0]])), "attention_mask holds 3")]:
        with pytest.raises(InputError, match=message):
            model(**kwargs)
