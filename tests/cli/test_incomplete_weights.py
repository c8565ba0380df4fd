"""Inference refuses a model directory whose weights lack a task head or an untied lm_head: it would
answer from random weights (it used to, with exit code 0 and one log line). Fine-tuning still starts
a new head on a base checkpoint."""
import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import finetune_helpers as h

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clm_model import save_tiny_model  # noqa: E402
from plmkit import tasks
from plmkit.cli import main
from plmkit.errors import CheckpointError
from plmkit.models.bert import BertConfig, BertForSequenceClassification
from plmkit.tasks.classification import ClassificationTask


def drop_weights(directory, prefix: str) -> None:
    weights = load_file(directory / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith(prefix)}, directory / "model.safetensors")


def test_a_classifier_without_its_head_is_refused(tmp_path, capsys):
    model_dir = tmp_path / "model"
    BertForSequenceClassification(BertConfig(vocab_size=3000, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16, id2label={0: "a", 1: "b"})).save_pretrained(model_dir)
    from plmkit.tokenization import Tokenizer
    Tokenizer.from_pretrained(h.tiny_model_dir()).save_pretrained(model_dir)
    ClassificationTask().save(model_dir)
    tasks.load_model_dir(model_dir)  # complete: loads
    drop_weights(model_dir, "classifier.")
    with pytest.raises(CheckpointError, match=r"model: the weights lack classifier.weight, classifier.bias, so they "
                                              r"would be random"):
        tasks.load_model_dir(model_dir)
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"text": "good", "label": "a"}) + "\n")
    for command in (["predict", "--input", str(data)], ["evaluate", "--data", str(data)]):
        assert main([*command[:1], "--model", str(model_dir), *command[1:]]) == 2
        assert "the weights lack classifier.weight" in capsys.readouterr().err


def test_a_decoder_without_its_untied_lm_head_is_refused(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "gpt")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    assert main(["generate", "--model", str(model_dir), "--prompt", "The", "--max-new-tokens", "1"]) == 2
    assert "gpt: the weights lack lm_head.weight, so they would be random" in capsys.readouterr().err
