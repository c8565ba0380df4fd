"""Checkpoint dtypes as transformers 5 handles them: from_pretrained keeps a bf16 checkpoint bf16 (dtype="auto", the
default), save_pretrained writes the model's dtype into config.json (`dtype`, and 4.x's `torch_dtype`), and what
trains from a checkpoint (fine-tuning, bert2bert) or quantizes one gets fp32 weights whatever its dtype. Also
`ignore_mismatched_sizes`."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from plmkit.errors import CheckpointError, ConfigError
from plmkit.models.bert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel
from plmkit.models.gpt2 import GPT2LMHeadModel

transformers = pytest.importorskip("transformers")

BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            pad_token_id=0, max_position_embeddings=64)
GPT2 = dict(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=37, bos_token_id=1, eos_token_id=2)


def dtypes(model) -> set[torch.dtype]:
    return {t.dtype for t in model.state_dict().values() if t.is_floating_point()}


def config_json(directory) -> dict:
    return json.loads((directory / "config.json").read_text())


@pytest.mark.parametrize("hf_class, hf_config, ours", [
    ("BertForMaskedLM", transformers.BertConfig(**BERT), BertForMaskedLM),
    ("GPT2LMHeadModel", transformers.GPT2Config(**GPT2), GPT2LMHeadModel),
])
def test_a_bf16_checkpoint_stays_bf16_through_plmkit_and_transformers(tmp_path, hf_class, hf_config, ours):
    torch.manual_seed(0)
    hf = getattr(transformers, hf_class)(hf_config).to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "hf")
    model = ours.from_pretrained(tmp_path / "hf")
    assert dtypes(model) == {torch.bfloat16} and model.config.dtype == "bfloat16"
    model.save_pretrained(tmp_path / "ours")
    c = config_json(tmp_path / "ours")
    assert c["dtype"] == c["torch_dtype"] == "bfloat16"  # 5.x's key, and the one 4.x before 4.56 reads
    assert {t.dtype for t in load_file(tmp_path / "ours" / "model.safetensors").values()} == {torch.bfloat16}
    back = getattr(transformers, hf_class).from_pretrained(tmp_path / "ours")
    assert back.dtype == torch.bfloat16 and back.config.dtype == torch.bfloat16
    theirs = hf.state_dict()
    assert all(torch.equal(t, theirs[k]) for k, t in back.state_dict().items())
    back.save_pretrained(tmp_path / "again")
    assert dtypes(ours.from_pretrained(tmp_path / "again")) == {torch.bfloat16}


def test_an_fp32_model_saves_its_dtype(tmp_path):
    BertModel(BertConfig(**BERT)).save_pretrained(tmp_path)
    c = config_json(tmp_path)
    assert c["dtype"] == c["torch_dtype"] == "float32"
    assert transformers.BertModel.from_pretrained(tmp_path).config.dtype == torch.float32


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bf16")
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(**BERT).with_labels(["a", "b", "c"])).to(torch.bfloat16).save_pretrained(
        directory)
    return directory


def test_dtype_and_torch_dtype_as_transformers_takes_them(bf16_dir, tmp_path):
    load = BertForSequenceClassification.from_pretrained
    for given, dtype in ((dict(), torch.bfloat16), (dict(dtype="auto"), torch.bfloat16),
                         (dict(dtype=None), torch.bfloat16), (dict(torch_dtype=torch.float32), torch.float32),
                         (dict(dtype="float16"), torch.float16)):
        model = load(bf16_dir, **given)
        assert dtypes(model) == {dtype} and model.config.dtype == str(dtype).removeprefix("torch.")
    with pytest.raises(ConfigError, match="dtype must be a floating torch dtype"):
        load(bf16_dir, dtype="int8")
    # "auto": config.json's dtype (4.x's torch_dtype where it has none) before the weights' own, as transformers
    copy = shutil.copytree(bf16_dir, tmp_path / "m")
    for fields, dtype in (({"dtype": "float32"}, torch.float32), ({"torch_dtype": "float16"}, torch.float16),
                          ({"dtype": "float32", "torch_dtype": "float16"}, torch.float32), ({}, torch.bfloat16)):
        c = {k: v for k, v in config_json(bf16_dir).items() if k not in ("dtype", "torch_dtype")}
        (copy / "config.json").write_text(json.dumps({**c, **fields}))
        assert dtypes(load(copy)) == {dtype}
        assert transformers.BertForSequenceClassification.from_pretrained(copy).dtype == dtype
    (copy / "config.json").write_text(json.dumps({**c, "dtype": "int64"}))
    with pytest.raises(ConfigError, match="dtype must name a floating torch dtype .*got 'int64'"):
        load(copy)


def test_training_and_quantization_start_from_fp32_weights_of_a_bf16_checkpoint(bf16_dir, tmp_path):
    from plmkit.compression.quantize import quantize_dir
    from plmkit.models.encoder_decoder import EncoderDecoderModel
    from plmkit.nn.quantized import QuantizedLinear
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(bf16_dir)  # bert2bert: a start for training
    assert dtypes(model) == {torch.float32}
    quantize_dir(bf16_dir, tmp_path / "int8")
    c = config_json(tmp_path / "int8")
    assert c["quantization_config"]["method"] == "dynamic-int8" and c["dtype"] == "float32"
    assert {t.dtype for t in load_file(tmp_path / "int8" / "model.safetensors").values()} == {torch.int8, torch.float32}
    q = BertForSequenceClassification.from_pretrained(tmp_path / "int8")
    assert isinstance(q.classifier, QuantizedLinear) and q.classifier.weight.dtype == torch.int8
    assert dtypes(q) == {torch.float32}  # scales, LayerNorms and embeddings: int8 kernels compute in fp32


def test_finetuning_a_bf16_checkpoint_trains_fp32_weights(tmp_path):
    import finetune_helpers as h
    from plmkit.cli import main
    model = BertModel.from_pretrained(h.tiny_model_dir()).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (h.tiny_model_dir() / name).is_file():
            shutil.copy(h.tiny_model_dir() / name, tmp_path / "bf16" / name)
    train = h.head_lines(h.data_dir("en-sentiment") / "movie_reviews.train.jsonl", tmp_path / "train.jsonl", 32)
    out = tmp_path / "run"
    assert main(["finetune", "--task", "classification", "--model", str(tmp_path / "bf16"), "--train", str(train),
                 "--out", str(out), "--max-steps", "2", "--batch-size", "16", "--max-length", "32",
                 "--precision", "bf16", "--device", "cpu", "--no-progress"]) == 0
    assert config_json(out / "model")["dtype"] == "float32"  # fp32 master weights (bf16 autocast over them)
    assert {t.dtype for t in load_file(out / "model" / "model.safetensors").values()} == {torch.float32}


def test_ignore_mismatched_sizes_starts_a_head_of_another_size_from_scratch(bf16_dir, caplog):
    load = BertForSequenceClassification.from_pretrained
    with pytest.raises(CheckpointError, match=r"classifier.weight: \(3, 32\) in the checkpoint, \(5, 32\) in the model"
                                              r".*ignore_mismatched_sizes=True"):
        load(bf16_dir, num_labels=5)
    model = load(bf16_dir, num_labels=5, ignore_mismatched_sizes=True)
    assert model.classifier.weight.shape == (5, 32) and model.config.id2label == {i: f"LABEL_{i}" for i in range(5)}
    assert "newly initialized because the shapes did not match:\n- classifier.bias: (3,) in the" in caplog.text
    assert "- classifier.weight: (3, 32) in the checkpoint, (5, 32) in the model" in caplog.text
    assert set(model.initialised_from_scratch) == {"classifier.weight", "classifier.bias"}
    loaded = load(bf16_dir)
    assert torch.equal(model.bert.embeddings.word.weight, loaded.bert.embeddings.word.weight)
    hf = transformers.BertForSequenceClassification.from_pretrained(bf16_dir, num_labels=5,
                                                                    ignore_mismatched_sizes=True)
    assert hf.classifier.weight.shape == model.classifier.weight.shape and hf.config.id2label == model.config.id2label
    same = load(bf16_dir, num_labels=3, ignore_mismatched_sizes=True)  # nothing mismatched: the head is loaded
    assert same.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert torch.equal(same.classifier.weight, loaded.classifier.weight)
