import pytest
import torch
from torch import nn

from plmkit.errors import ConfigError
from plmkit.models.bert import BertConfig, BertForSequenceClassification
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.nn.lora import LoRALinear, apply_lora, merge_lora, plain_state_dict, train_embedding_rows


def tiny():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32).with_labels(["a", "b"])
    return BertForSequenceClassification(config).eval()


def test_lora_linear_starts_as_identity_update_and_merges():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    lora = LoRALinear.wrap(base, rank=2, alpha=4)
    x = torch.randn(3, 8)
    assert torch.allclose(lora(x), base(x))  # B = 0 at the start
    with torch.no_grad():
        lora.lora_B.normal_()
    merged = lora.to_linear()
    assert torch.allclose(merged(x), lora(x), atol=1e-6)
    assert not lora.weight.requires_grad and lora.lora_A.requires_grad


def test_apply_lora_merged_equals_unmerged_and_saves_plain(tmp_path):
    model = tiny()
    wrapped = apply_lora(model, ("q", "v"), rank=4, alpha=8)
    assert wrapped == [f"bert.layers.{i}.attn.{t}" for i in range(2) for t in ("q", "v")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            with torch.no_grad():
                m.lora_B.normal_(std=0.1)
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    before = model(ids, mask).logits
    state = plain_state_dict(model)
    assert not any("lora" in k for k in state)
    model.save_pretrained(tmp_path)  # an ordinary checkpoint, LoRA folded in
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.allclose(reloaded(ids, mask).logits, before, atol=1e-5)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert torch.allclose(model(ids, mask).logits, before, atol=1e-5)


def test_lora_trains_only_adapters():
    model = tiny().train()
    apply_lora(model, ("q", "v", "fc_in"), rank=2)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        out = model(torch.randint(1, 50, (4, 6)), labels=torch.tensor([0, 1, 0, 1]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(m.lora_B.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))


def test_apply_lora_unknown_target():
    with pytest.raises(ConfigError, match="no Linear layer matches"):
        apply_lora(tiny(), ("query",))


def test_new_token_rows_train_under_lora_and_merge(tmp_path):
    model = tiny().train()
    apply_lora(model, ("q", "v"), rank=2)
    new_ids = [47, 49]  # e.g. tokens just added to the tokenizer
    emb = train_embedding_rows(model, model.get_input_embeddings(), new_ids)
    assert model.get_input_embeddings() is emb and not emb.weight.requires_grad and emb.trainable_rows.requires_grad
    before = plain_state_dict(model)["bert.embeddings.word.weight"].clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
    ids = torch.tensor([[2, 47, 5, 49, 7, 9], [3, 4, 47, 8, 1, 1]])
    model(ids, labels=torch.tensor([0, 1])).loss.backward()
    opt.step()
    after = plain_state_dict(model)["bert.embeddings.word.weight"]
    old = [i for i in range(50) if i not in new_ids]
    assert torch.equal(after[old], before[old])  # the original vocabulary stays exactly as it was
    assert not torch.allclose(after[new_ids], before[new_ids])  # the new rows trained
    assert "bert.embeddings.word.trainable_rows" not in plain_state_dict(model)
    model.eval()
    logits = model(ids).logits
    model.save_pretrained(tmp_path)  # an ordinary checkpoint: adapters and new rows folded in
    assert torch.allclose(BertForSequenceClassification.from_pretrained(tmp_path)(ids).logits, logits, atol=1e-5)
    merge_lora(model)
    assert type(model.get_input_embeddings()) is nn.Embedding
    assert torch.allclose(model(ids).logits, logits, atol=1e-5)


def test_train_embedding_rows_refuses_tied_embeddings():
    from plmkit.models.bert import BertForMaskedLM
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    with pytest.raises(ConfigError, match="tied"):
        train_embedding_rows(model, model.get_input_embeddings(), [49])


def test_every_target_must_name_layers():
    from torch import nn
    from plmkit.errors import ConfigError
    from plmkit.nn.lora import apply_lora
    model = nn.Sequential()
    model.add_module("q", nn.Linear(4, 4))
    model.add_module("v", nn.Linear(4, 4))
    with pytest.raises(ConfigError, match=r"no Linear layer matches \['bogus'\]"):
        apply_lora(model, ("q", "bogus"), rank=2)


def test_a_state_gathered_from_shards_is_merged_from_its_own_tensors():
    """`plain_state_dict(model, state)` merges the adapters of `state` (a sharded model's whole state,
    gathered onto one process), not the model's own tensors: what FSDP's saved model holds."""
    model = tiny()
    apply_lora(model, ("q",), rank=2, alpha=4)
    train_embedding_rows(model, model.get_input_embeddings(), [3, 7])
    gathered = {k: v + 0.5 for k, v in model.state_dict().items()}  # (other values than the model's)
    merged = plain_state_dict(model, gathered)
    q = "bert.layers.0.attn.q"
    expected = gathered[f"{q}.weight"] + gathered[f"{q}.lora_B"] @ gathered[f"{q}.lora_A"] * 2.0
    assert torch.allclose(merged[f"{q}.weight"], expected)
    rows = merged["bert.embeddings.word.weight"]
    assert torch.equal(rows[[3, 7]], gathered["bert.embeddings.word.trainable_rows"])
    assert torch.equal(rows[0], gathered["bert.embeddings.word.weight"][0])
    assert merged.keys() == plain_state_dict(model).keys() and not any("lora" in k or "rows" in k for k in merged)


def test_lora_on_a_tied_lm_head_is_refused_naming_the_tie():
    """The update would reach the head alone, and a checkpoint keeping the tied weight once (the
    embedding's) lost it: the reloaded model differed from the trained one."""
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=97, n_positions=32))
    assert model.lm_head.weight is model.transformer.embeddings.word.weight
    with pytest.raises(ConfigError, match=r"lm_head\.weight is tied to transformer\.embeddings\.word\.weight"):
        apply_lora(model, ("q", "lm_head"), rank=2)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())  # nothing wrapped
    assert apply_lora(model, ("q",), rank=2)  # untied layers still take adapters
