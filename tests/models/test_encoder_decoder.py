"""BERT-to-BERT warm starts: where the decoder's new cross-attention starts."""
import torch

from plmkit.models.bert import BertConfig, BertLMHeadModel, BertModel
from plmkit.models.encoder_decoder import EncoderDecoderModel

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32)
IDS = dict(decoder_start_token_id=1, pad_token_id=0, eos_token_id=2)


def test_cross_attention_starts_as_the_self_attention(tmp_path):
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path, **IDS)
    for block in model.decoder.bert.layers:
        for name, value in block.attn.state_dict().items():
            assert torch.equal(block.cross_attn.state_dict()[name], value), name
        assert torch.equal(block.cross_norm.weight, block.attn_norm.weight)
    model.decoder.bert.layers[0].attn.q.weight.data.add_(1)  # copies, not shared parameters
    assert not torch.equal(model.decoder.bert.layers[0].cross_attn.q.weight, model.decoder.bert.layers[0].attn.q.weight)


def test_a_decoder_with_its_own_cross_attention_keeps_it(tmp_path):
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path / "encoder")
    decoder = BertLMHeadModel(BertConfig(**TINY, is_decoder=True, add_cross_attention=True))
    decoder.save_pretrained(tmp_path / "decoder")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "encoder", tmp_path / "decoder", **IDS)
    for ours, saved in zip(model.decoder.bert.layers, decoder.bert.layers):
        assert torch.equal(ours.cross_attn.q.weight, saved.cross_attn.q.weight)
        assert not torch.equal(ours.cross_attn.q.weight, ours.attn.q.weight)
