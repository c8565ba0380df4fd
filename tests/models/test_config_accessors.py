"""Family-neutral config accessors: the same names on every family."""
import pytest

from plmkit.errors import ConfigError
from plmkit.models.bert import BertConfig
from plmkit.models.gpt2 import GPT2Config
from plmkit.models.llama import LlamaConfig


@pytest.mark.parametrize("config, limit", [
    (BertConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=2, max_position_embeddings=40), 40),
    (GPT2Config(n_layer=3, n_embd=64, n_head=2, n_positions=40), 40),
    (LlamaConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=2, max_position_embeddings=40), None),
])
def test_accessors(config, limit):
    assert (config.num_layers, config.d_model, config.context_length) == (3, 64, 40)
    assert config.max_positions == limit  # rotary positions have no hard limit
    overrides = config.dropout_overrides(0.25)
    assert set(overrides) == set(config.dropout_fields) and set(overrides.values()) == {0.25}
    with pytest.raises(ConfigError, match="dropout"):
        config.dropout_overrides(1.0)
