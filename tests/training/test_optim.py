import pytest
import torch
from torch import nn

from plmkit.training import TrainConfig, build_optimizer, param_groups


def by_name(groups):
    return {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}


def test_no_decay_on_bias_and_norm_weights(toy):
    model = toy.ToyLM()
    groups = param_groups(model, TrainConfig(max_steps=1, lr=1e-3, weight_decay=0.1))
    table = by_name(groups)
    assert set(table) == {n for n, _ in model.named_parameters()}
    for name, (lr, wd) in table.items():
        assert lr == 1e-3
        assert wd == (0.0 if name.endswith("bias") or "norm" in name else 0.1), name
    assert len(groups) == 2


class Classifier(nn.Module):
    def __init__(self, toy_lm):
        super().__init__()
        self.bert = toy_lm
        self.pooler = nn.Linear(16, 16)
        self.classifier = nn.Linear(16, 2)


def test_layer_wise_lr_decay_and_head_lr(toy):
    model = Classifier(toy.ToyLM(n_layers=3))
    cfg = TrainConfig(max_steps=1, lr=1e-3, weight_decay=0.1, layer_lr_decay=0.5, head_lr=5e-3)
    table = by_name(param_groups(model, cfg))
    expected = {
        "bert.embeddings.word_embeddings.weight": (1e-3 * 0.5**4, 0.1),
        "bert.embeddings.norm.weight": (1e-3 * 0.5**4, 0.0),
        "bert.layers.0.dense.weight": (1e-3 * 0.5**3, 0.1),
        "bert.layers.0.norm.bias": (1e-3 * 0.5**3, 0.0),
        "bert.layers.1.dense.bias": (1e-3 * 0.5**2, 0.0),
        "bert.layers.2.dense.weight": (1e-3 * 0.5**1, 0.1),
        "bert.norm.weight": (5e-3, 0.0),
        "bert.head.weight": (5e-3, 0.1),
        "pooler.weight": (5e-3, 0.1),
        "classifier.bias": (5e-3, 0.0),
    }
    for name, (lr, wd) in expected.items():
        assert table[name] == (pytest.approx(lr, rel=1e-12), wd), name
    groups = param_groups(model, cfg)
    assert len({(g["lr"], g["weight_decay"]) for g in groups}) == len(groups)


def test_frozen_parameters_are_left_out(toy):
    model = toy.ToyLM()
    for p in model.embeddings.parameters():
        p.requires_grad_(False)
    names = set(by_name(param_groups(model, TrainConfig(max_steps=1))))
    assert not any(n.startswith("embeddings.") for n in names)
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}


def test_build_optimizer_is_adamw_with_the_groups(toy):
    cfg = TrainConfig(max_steps=1, lr=2e-3, betas=(0.8, 0.9), eps=1e-6, layer_lr_decay=0.9)
    model = toy.ToyLM()
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in param_groups(model, cfg)]
    assert optimizer.defaults["betas"] == (0.8, 0.9) and optimizer.defaults["eps"] == 1e-6


def test_cpu_optimizer_is_fused_and_steps_like_the_default_loop(toy):
    torch.manual_seed(0)
    model, reference = toy.ToyLM(), toy.ToyLM()
    reference.load_state_dict(model.state_dict())
    cfg = TrainConfig(max_steps=1, lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(model, cfg)
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in param_groups(reference, cfg)])
    for _ in range(3):
        for m in (model, reference):
            for p in m.parameters():
                p.grad = torch.ones_like(p) * torch.arange(p.numel()).reshape(p.shape).sin()
        fused.step()
        loop.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def encoder_decoder(kind: str):
    """A random 2 + 2-layer BART or BERT-to-BERT, its token embedding's name, its layers' prefixes from the
    bottom up and a head parameter (BART's LM head is its shared embedding)."""
    from plmkit.models.auto import model_class
    from plmkit.models.bert import BertConfig
    from plmkit.models.encoder_decoder import EncoderDecoderConfig, EncoderDecoderModel
    from plmkit.models.registry import config_from_preset
    if kind == "bart":
        config = config_from_preset("bart-tiny", vocab_size=100)
        return (model_class(config.model_type, "seq2seq-lm")(config), "model.shared.weight",
                ["model.encoder.layers.0.", "model.encoder.layers.1.", "model.decoder.layers.0.",
                 "model.decoder.layers.1."], None)
    bert = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(bert, bert, decoder_start_token_id=2, pad_token_id=0)
    return (EncoderDecoderModel(config), "encoder.embeddings.word.weight",
            ["encoder.layers.0.", "encoder.layers.1.", "decoder.bert.layers.0.", "decoder.bert.layers.1."],
            "decoder.mlm.transform.dense.weight")


@pytest.mark.parametrize("kind", ["bart", "bert2bert"])
def test_layer_wise_lr_decay_counts_an_encoder_decoder_from_its_embeddings_up(kind):
    """The token embedding (BART's shared one too) and the other embeddings are the deepest, then the
    encoder's layers, then the decoder's above them all, then the head."""
    model, token_embedding, layers, head = encoder_decoder(kind)
    cfg = TrainConfig(max_steps=1, lr=1e-3, layer_lr_decay=0.5, head_lr=5e-3)
    lr = {name: lr for name, (lr, _) in by_name(param_groups(model, cfg)).items()}
    assert lr[token_embedding] == pytest.approx(1e-3 * 0.5**5)
    assert all(lr[n] == pytest.approx(1e-3 * 0.5**5) for n in lr if ".embeddings." in n)
    for depth, layer in enumerate(layers, 1):
        assert lr[layer + "attn.q.weight"] == pytest.approx(1e-3 * 0.5 ** (5 - depth)), layer
    assert head is None or lr[head] == 5e-3
