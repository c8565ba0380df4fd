"""plmkit.compression.quantize and plmkit.nn.quantized: int8 Linear layers close to fp32, saved as
int8 + scales in safetensors and loaded back exactly, and what cannot be done refused by name.

Tolerances (tiny random BERT, weights N(0, 0.05), 64 inputs of 24 tokens): dynamic-int8 logits
within 4% of the largest |logit| (measured 2.1%), weight-int8 within 1% (measured 0.6%); the same
argmax on at least 90% of the inputs (measured: all)."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from plmkit.compression.quantize import quantize_dir, quantize_model
from plmkit.errors import CheckpointError, ConfigError, TrainingError
from plmkit.models.auto import AutoModel, load_any
from plmkit.models.bert import BertConfig, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertModel
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.nn.quantized import QuantizedEmbedding, QuantizedLinear

TOLERANCE = {"dynamic-int8": 0.04, "weight-int8": 0.01}


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = BertConfig.from_preset("bert-tiny", vocab_size=500, num_labels=3, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config)
    model.init_weights(0.05)
    return model.eval()


@pytest.mark.parametrize("method", ["dynamic-int8", "weight-int8"])
def test_int8_logits_are_close_to_fp32(bert, method):
    q = quantize_model(copy.deepcopy(bert), method)
    assert sum(isinstance(m, QuantizedLinear) for m in q.modules()) == 2 * 6 + 2  # 6 per block, pooler, classifier
    assert q.num_parameters() == bert.num_parameters()
    ids = torch.randint(5, 500, (64, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = bert(input_ids=ids).logits, q(input_ids=ids).logits
    assert (a - b).abs().max() <= TOLERANCE[method] * a.abs().max()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    assert not torch.equal(a, b)  # int8 really ran


def test_save_and_load_round_trip_exactly(bert, tmp_path):
    bert.save_pretrained(tmp_path / "fp32")
    out = quantize_dir(tmp_path / "fp32", tmp_path / "int8")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["plmkit_quant_method"] == "plmkit-int8" and config["method"] == "dynamic-int8"
    assert config["quantized_layers"] == 14 + 3 and config["modules_to_not_convert"] == []  # + word, position, type
    tensors = load_file(out / "model.safetensors")
    assert tensors["bert.encoder.layer.0.attention.self.query.weight"].dtype == torch.int8
    assert tensors["bert.encoder.layer.0.attention.self.query.weight_scale"].shape == (128,)
    assert tensors["bert.embeddings.word_embeddings.weight"].dtype == torch.int8
    assert tensors["bert.embeddings.LayerNorm.weight"].dtype == torch.float32
    assert (out / "model.safetensors").stat().st_size < 0.27 * (tmp_path / "fp32" / "model.safetensors").stat().st_size
    loaded = load_any(out)
    in_memory = quantize_model(copy.deepcopy(bert), "dynamic-int8")
    ids = torch.randint(5, 500, (4, 16))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, in_memory(input_ids=ids).logits)
    loaded.save_pretrained(tmp_path / "again")
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in tensors)


def test_transformers_refuses_a_quantized_directory(bert, tmp_path):
    """Not the int8 codes read as fp32 weights: transformers raises on a quantization_config without
    quant_method (and 5.x would load one naming a method it does not know)."""
    transformers = pytest.importorskip("transformers")
    bert.save_pretrained(tmp_path / "fp32")
    out = quantize_dir(tmp_path / "fp32", tmp_path / "int8")
    with pytest.raises(ValueError, match="quant_method"):
        transformers.AutoModelForSequenceClassification.from_pretrained(out)


def test_a_directory_written_with_quant_method_loads_and_is_saved_with_the_new_key(bert, tmp_path):
    bert.save_pretrained(tmp_path / "fp32")
    out = quantize_dir(tmp_path / "fp32", tmp_path / "int8")
    config = json.loads((out / "config.json").read_text())
    block = config["quantization_config"]
    block["quant_method"] = block.pop("plmkit_quant_method")  # as plmkit quantize wrote it before
    (out / "config.json").write_text(json.dumps(config))
    loaded = load_any(out)
    ids = torch.randint(5, 500, (4, 16))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, quantize_model(copy.deepcopy(bert))(input_ids=ids).logits)
    loaded.save_pretrained(tmp_path / "again")
    block = json.loads((tmp_path / "again" / "config.json").read_text())["quantization_config"]
    assert block["plmkit_quant_method"] == "plmkit-int8" and "quant_method" not in block


LM_BUILDERS = {"BertForPreTraining": lambda: BertForPreTraining(BertConfig.from_preset("bert-tiny", vocab_size=300)),
               "BertForMaskedLM": lambda: BertForMaskedLM(BertConfig.from_preset("bert-tiny", vocab_size=300)),
               "GPT2LMHeadModel": lambda: GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=300))}


@pytest.mark.parametrize("name", list(LM_BUILDERS))
def test_an_lm_with_tied_embeddings_quantized_loads_as_its_base_model(name, tmp_path):
    """The checkpoint says which layers are int8: the base model keeps the embedding its LM's head was
    tied to fp32 (as `plmkit serve`'s /v1/embeddings loads it)."""
    LM_BUILDERS[name]().eval().save_pretrained(tmp_path / "fp32")
    out = quantize_dir(tmp_path / "fp32", tmp_path / "int8")
    base, lm = AutoModel.from_pretrained(out), load_any(out)
    body = getattr(lm, lm.base_prefix)  # the int8 LM without its head
    assert type(base) is type(body) and type(base.get_input_embeddings()) is nn.Embedding and base.cpu_only
    ids = torch.randint(5, 300, (2, 12))
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids).last_hidden_state, body(input_ids=ids).last_hidden_state)


def test_an_int8_layer_the_loading_class_ties_is_refused_by_name(tmp_path):
    quantize_model(BertModel(BertConfig.from_preset("bert-tiny", vocab_size=300)).eval()).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"holds bert.embeddings.word_embeddings.weight .* as int8, but "
                                              r"BertForMaskedLM ties it to another layer"):
        BertForMaskedLM.from_pretrained(tmp_path)


def test_decoder_keeps_its_tied_head_and_generates(tmp_path):
    from clm_helpers import tiny_tokenizer
    from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
    tok = tiny_tokenizer()
    config = LlamaConfig.from_preset("llama-tiny", vocab_size=len(tok), tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "fp32")
    tok.save_pretrained(tmp_path / "fp32")
    loaded = load_any(quantize_dir(tmp_path / "fp32", tmp_path / "int8"))
    assert isinstance(loaded.lm_head, QuantizedLinear)  # untied: quantized like the blocks
    assert isinstance(loaded.model.embeddings["word"], QuantizedEmbedding)
    ids = torch.tensor([tok.encode("the old sailor")])
    greedy = loaded.generate(ids, max_new_tokens=6, do_sample=False)
    assert greedy.shape == (1, ids.shape[1] + 6)
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert (a - b).abs().max() <= 0.04 * a.abs().max()


def test_encoder_decoder_keeps_its_output_projection(tmp_path):
    from plmkit.models.marian import MarianConfig, MarianMTModel
    config = MarianConfig.from_preset("marian-tiny", vocab_size=300, decoder_vocab_size=300, pad_token_id=0,
                                      eos_token_id=1, decoder_start_token_id=0, share_encoder_decoder_embeddings=False,
                                      tie_word_embeddings=False)
    model = MarianMTModel(config).eval()
    q = quantize_model(copy.deepcopy(model), "dynamic-int8")
    assert type(q.lm_head) is nn.Linear  # read as a tensor by the forward: fp32
    assert q.config.quantization_config["modules_to_not_convert"] == ["lm_head"]
    src, tgt = torch.randint(2, 300, (2, 9)), torch.randint(2, 300, (2, 7))
    with torch.no_grad():
        a, b = model(input_ids=src, labels=tgt).logits, q(input_ids=src, labels=tgt).logits
    assert (a - b).abs().max() <= 0.04 * a.abs().max()
    assert q.generate(src, max_new_tokens=4, do_sample=False).shape[0] == 2


def test_refusals_are_named(bert, tmp_path):
    from plmkit.nn.lora import apply_lora
    from plmkit.utils.device import resolve_device
    with pytest.raises(ConfigError, match=r"unmerged LoRA layers \(bert.layers.0.attn.q, .*merge them first"):
        with_lora = copy.deepcopy(bert)
        apply_lora(with_lora)
        quantize_model(with_lora, "dynamic-int8")
    q = quantize_model(copy.deepcopy(bert), "dynamic-int8")
    with pytest.raises(TrainingError, match="runs inference only and cannot be trained or fine-tuned"):
        q.train()
    with pytest.raises(ConfigError, match="quantized already"):
        quantize_model(q, "weight-int8")
    with pytest.raises(ConfigError, match="run on the CPU only"):
        q.to("meta")
    with pytest.raises(ConfigError, match="quantized to int8, whose kernels run on the CPU only"):
        resolve_device("cuda", cpu_only=True)
    assert resolve_device("auto", cpu_only=True).type == "cpu"
    with pytest.raises(ConfigError, match="--method 'int4' is not one of dynamic-int8, weight-int8"):
        quantize_model(copy.deepcopy(bert), "int4")
    bert.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="LoRA adapters that are not merged \\(adapter_config.json\\)"):
        quantize_dir(tmp_path / "m", tmp_path / "out")
    (tmp_path / "m" / "adapter_config.json").unlink()
    with pytest.raises(ConfigError, match="inputs are never written over"):
        quantize_dir(tmp_path / "m", tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq"}}))
    with pytest.raises(ConfigError, match="quant_method 'gptq' is not one plmkit runs"):
        load_any(tmp_path / "m")


def test_an_out_holding_other_files_is_kept_unless_overwrite(bert, tmp_path):
    bert.save_pretrained(tmp_path / "fp32")
    mine = tmp_path / "mywork"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match=f"--out {mine} holds files that plmkit did not write there"):
        quantize_dir(tmp_path / "fp32", mine)
    assert (mine / "notes.txt").read_text() == "precious"
    quantize_dir(tmp_path / "fp32", tmp_path / "int8")
    quantize_dir(tmp_path / "fp32", tmp_path / "int8")  # an earlier quantized model is replaced
    quantize_dir(tmp_path / "fp32", mine, overwrite=True)
    assert not (mine / "notes.txt").exists()
    (tmp_path / "link").symlink_to(tmp_path / "int8")  # the link stays, the directory it names is replaced
    assert quantize_dir(tmp_path / "fp32", tmp_path / "link", "weight-int8") == tmp_path / "link"
    assert (tmp_path / "link").is_symlink()
    assert json.loads((tmp_path / "int8" / "config.json").read_text())["quantization_config"]["method"] == "weight-int8"


def test_the_int8_copy_carries_none_of_the_commands_records_of_its_source(bert, tmp_path):
    from plmkit.compression.records import RECORD_FILES
    bert.save_pretrained(tmp_path / "pruned")
    for name in sorted(RECORD_FILES):  # (prune.json, compression_report.json, a run's files ...: another model's)
        (tmp_path / "pruned" / name).write_text("{}")
    (tmp_path / "pruned" / "generation_config.json").write_text("{}")  # a companion: copied
    out = quantize_dir(tmp_path / "pruned", tmp_path / "int8")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]


def _sharded_bin_copy(source, directory, hub_extras: bool) -> None:
    """`source`'s model as transformers 4.x wrote large ones (pytorch_model-0000i-of-00002.bin shards and
    pytorch_model.bin.index.json), with a README; `hub_extras`: beside model.safetensors and other
    frameworks' weights, as a hub repository holds them."""
    import shutil
    directory.mkdir()
    shutil.copy(source / "config.json", directory)
    (directory / "README.md").write_text("a model card")
    state = load_file(source / "model.safetensors")
    names = sorted(state)
    shards = {f"pytorch_model-0000{i + 1}-of-00002.bin": names[i::2] for i in range(2)}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, directory / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if hub_extras:
        shutil.copy(source / "model.safetensors", directory)
        for name in ("tf_model.h5", "flax_model.msgpack", "model.safetensors.index.json"):
            (directory / name).write_bytes(b"{}")


@pytest.mark.parametrize("hub_extras", [False, True])
def test_a_sharded_source_leaves_its_weights_behind_and_the_size_counts_the_output_only(bert, tmp_path, hub_extras):
    from plmkit.compression.report import BACKENDS, weight_bytes
    bert.save_pretrained(tmp_path / "fp32")
    _sharded_bin_copy(tmp_path / "fp32", tmp_path / "sharded", hub_extras)
    ids = torch.randint(5, 500, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_any(tmp_path / "sharded")(ids).logits, bert(ids).logits, atol=0, rtol=0)
    out = quantize_dir(tmp_path / "sharded", tmp_path / "int8")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    torch_backend = BACKENDS["torch"]
    assert weight_bytes(out, torch_backend) == (out / "model.safetensors").stat().st_size
    expected = (tmp_path / "sharded" / "model.safetensors").stat().st_size if hub_extras else sum(
        p.stat().st_size for p in (tmp_path / "sharded").glob("pytorch_model*"))
    assert weight_bytes(tmp_path / "sharded", torch_backend) == expected  # what the source loads from, once
