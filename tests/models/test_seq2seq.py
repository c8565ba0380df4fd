"""Encoder-decoders (BART, Marian, BERT-to-BERT): caching, causality, padding, labels and their errors,
generation that runs the encoder once and never copies the cross-attention keys and values,
streaming, presets."""
import pytest
import torch

from plmkit import (AutoConfig, AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, BertConfig,
                    EncoderDecoderConfig, EncoderDecoderModel, MarianConfig, MarianMTModel)
from plmkit.errors import ConfigError, PlmkitError
from plmkit.models.registry import config_from_preset
from plmkit.models.seq2seq import labelled_prefix, shift_tokens_right

TINY = dict(vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64)
BERT = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=64)


def make(family: str):
    torch.manual_seed(0)
    if family == "bart":
        model = BartForConditionalGeneration(BartConfig(**TINY, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2))
    elif family == "bert2bert":
        model = EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(
            BertConfig(**BERT), BertConfig(**BERT), pad_token_id=1, decoder_start_token_id=2, eos_token_id=2))
    else:
        model = MarianMTModel(MarianConfig(**TINY, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0,
                                           forced_eos_token_id=2, scale_embedding=True, activation_function="swish"))
    with torch.no_grad():  # sharper distributions than the tiny init gives
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)
    return model.eval()


@pytest.fixture(params=["bart", "marian", "bert2bert"])
def model(request):
    return make(request.param)


def sources(lengths=(9, 4, 6), pad=1):
    ids = torch.randint(3, 300, (len(lengths), max(lengths)))
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


def test_cached_decoding_equals_the_full_forward(model):
    ids, mask = sources()
    target = torch.randint(3, 300, (3, 7))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, decoder_input_ids=target).logits
        cache = model.make_cache(3, 7, model.encode(ids, mask), mask)
        pieces = [model(decoder_input_ids=target[:, :3], past_key_values=cache).logits]
        pieces += [model(decoder_input_ids=target[:, i:i + 1], past_key_values=cache).logits for i in range(3, 7)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


def test_a_decoder_token_never_sees_a_later_target_token(model):
    ids, mask = sources()
    target = torch.randint(3, 300, (3, 8))
    changed = target.clone()
    changed[:, 5] = (target[:, 5] + 1) % 300
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, decoder_input_ids=target).logits
        b = model(input_ids=ids, attention_mask=mask, decoder_input_ids=changed).logits
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=0, rtol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_a_source_encodes_the_same_alone_and_in_a_padded_batch(model):
    ids, mask = sources((9, 4, 6))
    with torch.no_grad():
        batch = model.encode(ids, mask)
        for row, n in enumerate((9, 4, 6)):
            alone = model.encode(ids[row:row + 1, :n])
            torch.testing.assert_close(batch[row, :n], alone[0], atol=1e-5, rtol=1e-5)
            assert (batch[row, n:] == 0).all()  # padding is never computed: zeros


def test_padded_targets_give_each_rows_own_loss(model):
    """Positions after a row's last label are skipped (no compute on padding); the logits of the
    labelled positions and the loss are those of the dense path and of each row alone."""
    ids, mask = sources()
    labels = torch.randint(3, 300, (3, 6))
    labels[1, 2:] = -100
    labels[2, 4:] = -100
    model.train()
    for m in model.modules():
        m.training = m is model  # no dropout, but the training path (fused LM head + loss)
    fused = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert fused.logits is None
    dense = model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=True)
    torch.testing.assert_close(fused.loss, dense.loss, atol=1e-5, rtol=1e-5)
    smoothed = [model(input_ids=ids, attention_mask=mask, labels=labels, label_smoothing=0.1, return_logits=r).loss
                for r in (False, True)]
    torch.testing.assert_close(*smoothed, atol=1e-5, rtol=1e-5)
    assert abs(float(smoothed[0].detach() - fused.loss.detach())) > 1e-3
    model.eval()
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        for row, n in enumerate((6, 2, 4)):
            alone = model(input_ids=ids[row:row + 1, :int(mask[row].sum())], labels=labels[row:row + 1, :n]).logits
            torch.testing.assert_close(batch[row, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_labels_shift_into_decoder_inputs():
    labels = torch.tensor([[5, 6, 7, -100], [8, -100, -100, -100]])
    assert shift_tokens_right(labels, 1, 2).tolist() == [[2, 5, 6, 7], [2, 8, 1, 1]]
    assert labelled_prefix(torch.tensor([[5, -100, 7, -100], [-100, -100, -100, -100]])).tolist() == [
        [1, 1, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ConfigError, match="decoder_start_token_id is not set"):
        shift_tokens_right(labels, 1, None)
    with pytest.raises(ConfigError, match="pad_token_id is not set"):
        shift_tokens_right(labels, None, 2)


def test_bad_input_is_a_clear_error(model):
    too_long = torch.randint(3, 300, (1, 65))
    with pytest.raises(PlmkitError, match="65 (positions|tokens) but this model takes at most 64"):
        model(input_ids=too_long, labels=torch.tensor([[5, 6]]))
    with pytest.raises(PlmkitError, match="70 (positions|tokens) but this model takes at most 64"):
        model(input_ids=too_long[:, :5], labels=torch.randint(3, 300, (1, 70)))
    with pytest.raises(PlmkitError, match="give labels or decoder_input_ids"):
        model(input_ids=too_long[:, :5])
    with pytest.raises(PlmkitError, match="prompt \\+ max_new_tokens = 71 positions"):
        model.generate(too_long[:, :5], max_new_tokens=70)
    model.config.decoder_start_token_id = None
    with pytest.raises(ConfigError, match="the decoder needs its first token"):
        model.generate(too_long[:, :5], max_new_tokens=3)
    with pytest.raises(ConfigError, match="decoder_start_token_id is not set"):
        model(input_ids=too_long[:, :5], labels=torch.tensor([[5, 6]]))
    with pytest.raises(ConfigError, match="unknown generation setting.*num_beam\\b"):
        model.generate(too_long[:, :5], num_beam=3)
    with pytest.raises(ConfigError, match="num_return_sequences=5 is more than num_beams=4"):
        model.generate(too_long[:, :5], num_beams=4, num_return_sequences=5, decoder_start_token_id=2)


def test_generate_returns_decoder_ids_and_equals_an_uncached_greedy_loop(model):
    ids, mask = sources()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[], forced_eos_token_id=[])
    start = model.config.decoder_start_token_id
    seq = torch.full((3, 1), start)
    with torch.no_grad():
        for _ in range(8):
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=seq).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)


def test_slot_cache_rows_of_their_own_lengths_and_sources_give_the_full_forwards_logits(model):
    """A server's rows (`make_slot_cache`): sources of different lengths join at different steps, so each row
    is at its own target position (Marian's sinusoids, BART's offset positions, BERT's absolute ones, all
    through ``decoder_position_ids``); every step's logits equal each target's own full forward."""
    ids, mask = sources((9, 4, 6))
    targets = torch.randint(3, 300, (3, 7))
    joins = {0: 0, 2: 1, 3: 2}  # step -> the source that joins before it
    with torch.no_grad():
        full = [model(input_ids=ids[i:i + 1, :int(mask[i].sum())], decoder_input_ids=targets[i:i + 1]).logits[0]
                for i in range(3)]  # (7, V) each, alone and unpadded
        cache, rows, fed = model.make_slot_cache(3, 8), [], []
        cross = model.cross_keys_values(model.encode(ids, mask))  # (3, H, 9, d) each, padded
        for step in range(7):
            if step in joins:
                i = joins[step]
                cache.join_source([(k[i], v[i]) for k, v in cross], int(mask[i].sum()))
                rows.append(i)
                fed.append(0)
            tokens = torch.stack([targets[i, fed[r]] for r, i in enumerate(rows)])[:, None]  # (n, 1)
            logits = model(decoder_input_ids=tokens, decoder_attention_mask=cache.step_mask(),
                           decoder_position_ids=cache.positions(), past_key_values=cache).logits[:, 0]
            cache.advance()
            for r, i in enumerate(rows):
                torch.testing.assert_close(logits[r], full[i][fed[r]], atol=1e-4, rtol=1e-4)
                fed[r] += 1
    assert fed == [7, 5, 4] and cache.lengths[:3].tolist() == fed


def test_beams_share_their_sources_cross_attention_keys_and_values(model, monkeypatch):
    """The encoder runs once on the B sources, the cross keys and values are (B, H, S, d), made once, and
    stay where they are while beam search reorders the (B * beams) self-attention rows."""
    ids, mask = sources()
    made, encoded = [], []
    make_cache, encode = type(model).make_cache, type(model).encode
    monkeypatch.setattr(type(model), "make_cache", lambda self, *a, **k: made.append(make_cache(self, *a, **k)) or made[-1])
    monkeypatch.setattr(type(model), "encode", lambda self, *a: encoded.append(a[0].shape) or encode(self, *a))
    model.generate(ids, attention_mask=mask, num_beams=4, max_new_tokens=6)
    (cache,) = made
    assert encoded == [ids.shape]
    assert cache[0].k.shape[0] == 12 and all(k.shape[0] == 3 and v.shape[0] == 3 for k, v in cache.cross)
    pointers = [k.data_ptr() for k, _ in cache.cross]
    with torch.inference_mode():
        cache.reorder(torch.tensor([3, 2, 1, 0] * 3))
    assert [k.data_ptr() for k, _ in cache.cross] == pointers


def test_sampling_several_sequences_per_source(model):
    ids, mask = sources()
    kw = dict(max_new_tokens=6, do_sample=True, top_k=20, num_return_sequences=3, seed=1)
    out = model.generate(ids, attention_mask=mask, **kw)
    assert out.shape[0] == 9 and torch.equal(out, model.generate(ids, attention_mask=mask, **kw))
    assert len({tuple(r) for r in out[:3].tolist()}) > 1


def test_stream_yields_the_translation(model):
    class Chars:  # a tokenizer of one character per id
        def encode(self, text):
            return [ord(c) % 250 + 40 for c in text]

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids if not (skip_special_tokens and i < 40))
    tok = Chars()
    pieces = list(model.stream(tok, "a source sentence", max_new_tokens=10, eos_token_id=[]))
    ids = torch.tensor([tok.encode("a source sentence")])
    assert "".join(pieces) == tok.decode(model.generate(ids, max_new_tokens=10, eos_token_id=[])[0].tolist())
    with pytest.raises(ConfigError, match="beam"):
        next(model.stream(tok, "x", num_beams=2))


def test_presets_auto_classes_and_generation_config_round_trip(tmp_path):
    smaller = config_from_preset("marian-base", vocab_size=32000)  # Opus-MT's ids (58100) are no tokens here:
    assert smaller.pad_token_id is None and smaller.decoder_start_token_id is None  # they come with the tokenizer
    with pytest.raises(ConfigError, match="pad_token_id=32000 is not a token of the 32000-word vocabulary"):
        config_from_preset("marian-base", vocab_size=32000, pad_token_id=32000)
    config = config_from_preset("marian-base", vocab_size=32000, pad_token_id=0, decoder_start_token_id=0,
                                eos_token_id=1, forced_eos_token_id=1)
    assert type(config) is MarianConfig
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.activation_function) == (512, 6, 6, "swish")
    assert BartConfig.from_preset("bart-tiny").encoder_layers == 2 and config_from_preset("bart-small").d_model == 512
    model = make("bart")
    model.generation_config = {"num_beams": 3, "no_repeat_ngram_size": 2, "max_length": 9}
    model.save_pretrained(tmp_path)
    again = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert type(again) is BartForConditionalGeneration and type(AutoConfig.from_pretrained(tmp_path)) is BartConfig
    ids, mask = sources()
    expected = model.generate(ids, attention_mask=mask, num_beams=3, no_repeat_ngram_size=2, max_new_tokens=8)
    assert torch.equal(again.generate(ids, attention_mask=mask), expected)  # its defaults: max_length 9 = 1 + 8


def test_resizing_the_vocabulary_resizes_the_tied_head_and_its_bias():
    model = make("bart")
    model.final_logits_bias[0, :5] = torch.arange(5.0)
    model.resize_token_embeddings(310)
    assert model.lm_head.weight is model.model.shared.weight and model.lm_head.weight.shape[0] == 310
    assert model.final_logits_bias.shape == (1, 310) and model.final_logits_bias[0, :5].tolist() == [0, 1, 2, 3, 4]
    assert model(input_ids=torch.tensor([[305, 4]]), labels=torch.tensor([[309]])).logits.shape == (1, 1, 310)
    with pytest.raises(ConfigError, match="resize the halves"):
        make("bert2bert").resize_token_embeddings(310)
