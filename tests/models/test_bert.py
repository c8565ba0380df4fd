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
