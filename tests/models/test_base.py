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
