import pytest
import torch

from plmkit.models.auto import AutoModelForCausalLM
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM


@pytest.mark.parametrize("build", [
    lambda: LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=40)),  # untied by default
    lambda: GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16,
                                                   tie_word_embeddings=False)),
])
def test_resize_grows_an_untied_lm_head_and_the_checkpoint_reloads(build, tmp_path):
    # e.g. SFT adding <|pad|> to the tokenizer of a Llama: the head must follow the embeddings
    torch.manual_seed(0)
    model = build().eval()
    old_head = model.lm_head.weight.detach().clone()
    model.resize_token_embeddings(41)
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    assert model.lm_head.weight.shape == (41, old_head.shape[1]) and torch.equal(model.lm_head.weight[:40], old_head)
    assert model(torch.tensor([[40, 1, 2]])).logits.shape == (1, 3, 41)
    model.save_pretrained(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).lm_head.weight.shape == (41, old_head.shape[1])


def test_an_unknown_body_weight_is_an_error_and_another_tasks_head_is_ignored(tmp_path):
    from safetensors.torch import load_file, save_file

    from plmkit.errors import CheckpointError
    from plmkit.models.bert import BertConfig, BertForSequenceClassification, BertModel
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["cls.predictions.transform.dense.weight"] = torch.zeros(16, 16)  # BertForPreTraining's head
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    BertModel.from_pretrained(tmp_path)
    BertForSequenceClassification.from_pretrained(tmp_path)
    weights["encoder.layer.0.attention.self.gate.weight"] = torch.zeros(16, 16)  # not BERT's
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for cls in (BertModel, BertForSequenceClassification):
        with pytest.raises(CheckpointError, match=r"unexpected: (bert\.)?encoder.layer.0.attention.self.gate.weight"):
            cls.from_pretrained(tmp_path)


def test_a_tokenizer_larger_than_the_embedding_is_refused_by_name():
    from types import SimpleNamespace

    from plmkit.errors import CheckpointError
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16))
    model.check_vocabulary(type("Tok", (), {"__len__": lambda self: 40})(), "m")
    big = type("Tok", (), {"__len__": lambda self: 41})()
    with pytest.raises(CheckpointError, match="m: the tokenizer has 41 tokens but the model's embedding has 40 rows"):
        model.check_vocabulary(big, "m")


def test_weights_that_are_no_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from plmkit.errors import CheckpointError
    GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    name = next(k for k in weights if k.endswith("ln_f.weight"))
    for bad, message in [(weights[name].long(), r"holds integers where weights are numbers .*ln_f.weight .*torch.int64"),
                         (weights[name] * float("nan"), "holds NaN or inf in .*ln_f.weight")]:
        save_file({**weights, name: bad}, tmp_path / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match=message):
            AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16)).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("file, values, message", [
    ("generation_config.json", {"num_beams": 0}, r"generation_config.json: num_beams must be >= 1, got 0"),
    ("generation_config.json", {"top_p": 2}, r"generation_config.json: top_p must be in \[0, 1\], got 2"),
    ("generation_config.json", {"max_new_tokens": -3}, r"generation_config.json: max_new_tokens must be >= 1, got -3"),
    ("generation_config.json", {"do_sample": "yes"}, r"generation_config.json: do_sample must be bool, got 'yes'"),
    ("generation_config.json", {"pad_token_id": 40}, r"generation_config.json: pad_token_id must be a token id of "
                                                     r"this model's 40-token vocabulary \(< 40\), got 40"),
    ("generation_config.json", {"eos_token_id": [1, -2]}, r"eos_token_id must be >= 0, got \(1, -2\)"),
    ("generation_config.json", {"pad_token_id": -1}, r"generation_config.json: pad_token_id must be >= 0, got -1"),
    ("config.json", {"num_beams": 0}, r"config.json: num_beams must be >= 1, got 0"),  # an older checkpoint's
])
def test_generation_defaults_are_checked_when_a_model_is_loaded(gpt2_dir, tmp_path, file, values, message):
    import json
    import shutil

    from plmkit.errors import CheckpointError
    copy = shutil.copytree(gpt2_dir, tmp_path / "m")
    path = copy / file
    path.write_text(json.dumps({**(json.loads(path.read_text()) if path.exists() else {}), **values}))
    with pytest.raises(CheckpointError, match=message):
        GPT2LMHeadModel.from_pretrained(copy)


def test_a_bos_or_eos_beyond_the_vocabulary_loads_is_never_generated_and_is_saved_back(gpt2_dir, tmp_path, caplog):
    """Ids no token of the vocabulary has (GPT-2's 50256 in a tiny test config) are tokens the model cannot
    produce: loaded (as transformers does) with one warning, left out of generate()'s defaults, saved as read."""
    import json
    import shutil
    copy = shutil.copytree(gpt2_dir, tmp_path / "m")
    settings = {"bos_token_id": 40, "eos_token_id": [7, 99], "forced_eos_token_id": 50256}
    (copy / "generation_config.json").write_text(json.dumps(settings))
    model = GPT2LMHeadModel.from_pretrained(copy)
    assert ("bos_token_id=40, eos_token_id=99, forced_eos_token_id=50256 lie outside the 40-token vocabulary"
            in caplog.text)
    assert model.generation_config == settings
    s = model.generation_settings(3)
    assert (s.bos_token_id, s.eos_token_ids, s.forced_eos_token_ids) == (None, (7,), ())
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "generation_config.json").read_text()) == settings


def test_from_pretrained_takes_hugging_faces_dtypes_and_names_a_keyword_it_does_not_know(gpt2_dir):
    from plmkit.errors import ConfigError
    for given, dtype in ((dict(torch_dtype=torch.bfloat16), torch.bfloat16), (dict(dtype="float16"), torch.float16),
                         (dict(torch_dtype="auto"), torch.float32), (dict(dtype=None), torch.float32)):
        assert GPT2LMHeadModel.from_pretrained(gpt2_dir, **given).lm_head.weight.dtype == dtype
    for given, message in ((dict(torch_dtype="int8"), r"torch_dtype must be a floating torch dtype .*got 'int8'"),
                           (dict(dtype=torch.long), r"dtype must be a floating torch dtype .*got torch.int64"),
                           (dict(dtype="float32", torch_dtype="float32"), "give torch_dtype or dtype, not both"),
                           (dict(low_cpu_mem_usage=True), r"unknown key\(s\) 'low_cpu_mem_usage' for GPT2Config"),
                           (dict(output_hidden_states=True), r"output_hidden_states=True is not a setting of plmkit's "
                                                             r"GPT2Config: ask the forward call")):
        with pytest.raises(ConfigError, match=message):
            GPT2LMHeadModel.from_pretrained(gpt2_dir, **given)


def test_labels_given_two_ways_must_agree_and_one_replaces_both(gpt2_dir):
    from plmkit.errors import CheckpointError, ConfigError
    config = GPT2Config.from_pretrained(gpt2_dir, id2label={0: "neg", 1: "pos"})
    assert config.label2id == {"neg": 0, "pos": 1}
    assert GPT2Config.from_pretrained(gpt2_dir, label2id={"a": 1, "b": 0}).id2label == {0: "b", 1: "a"}
    with pytest.raises(ConfigError, match=r"label2id \{'neg': 1, 'pos': 0\} contradicts id2label"):
        GPT2Config.from_pretrained(gpt2_dir, id2label={0: "neg", 1: "pos"}, label2id={"neg": 1, "pos": 0})
    with pytest.raises(CheckpointError, match=r"the model directory must be the path of a directory .*got NoneType"):
        GPT2LMHeadModel.from_pretrained(None)


@pytest.mark.parametrize("family, head", [("bert", "cls.predictions.decoder.weight"), ("gpt2", "lm_head.weight"),
                                          ("llama", "lm_head.weight")])
def test_a_tied_checkpoint_with_another_head_weight_loads_the_embedding_and_warns(family, head, tmp_path, caplog):
    """tie_word_embeddings=true, yet the file holds the head with other values: the embedding is the tensor
    (as transformers 4.x ties them), whatever the order of the keys, and a warning names the ignored key."""
    from safetensors.torch import load_file, save_file

    from plmkit.models.auto import AutoModelForMaskedLM
    from plmkit.models.bert import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    model = {"bert": lambda: BertForMaskedLM(BertConfig.from_preset("bert-tiny", vocab_size=40)),
             "gpt2": lambda: GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16)),
             "llama": lambda: LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=40,
                                                                       tie_word_embeddings=True))}[family]()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert head not in weights  # (a tied head is stored once, under the embedding's name)
    auto = AutoModelForMaskedLM if family == "bert" else AutoModelForCausalLM
    ids = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        expected = auto.from_pretrained(tmp_path)(ids).logits
    stale = torch.randn_like(model.get_input_embeddings().weight)
    for order in ("head first", "head last"):
        file = {head: stale, **weights} if order == "head first" else {**weights, head: stale}
        save_file(file, tmp_path / "model.safetensors", metadata={"format": "pt"})
        caplog.clear()
        loaded = auto.from_pretrained(tmp_path)
        assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, expected, atol=0, rtol=0)
        assert f"holds {head}" in caplog.text and "with other values than" in caplog.text
    save_file({**weights, head: model.get_input_embeddings().weight.detach()}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})  # the same values (a .bin checkpoint stores both names): no warning
    caplog.clear()
    auto.from_pretrained(tmp_path)
    assert "with other values than" not in caplog.text


def test_a_shard_index_naming_files_outside_its_directory_or_no_weight_map_is_refused(tmp_path):
    import json

    from plmkit.errors import CheckpointError
    GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16)).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path.parent / "elsewhere.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"transformer.wte.weight": "../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match=r"names shards outside its directory \('\.\./elsewhere"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="no weight_map of tensor names to shard files"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
