"""generate() against transformers' on tiny random GPT-2, Llama, BART and BERT-to-BERT models: the defaults
transformers fills in (top_k 50 when sampling, an attention mask made of the pad ids), top_k 0, the
return_dict_in_generate outputs (scores, logits, beam search's sequences_scores and beam_indices),
generation_config= and model.generation_config as objects, and bert2bert's token_type_ids."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402
from plmkit.errors import ConfigError  # noqa: E402
from plmkit.generation import GenerateOutput, GenerationConfig  # noqa: E402
from seq2seq_checks import TINY as BART_TINY, padded, roughen  # noqa: E402

VOCAB = 99  # more than 50 tokens: transformers' default top_k filters something
GPT2 = dict(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=37, bos_token_id=1,
            eos_token_id=2, pad_token_id=0)
LLAMA = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
BERT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def causal_pair(tmp_path, family: str, **overrides):
    """A tiny random transformers model (larger weights than its init: differences would show) and the same weights
    loaded by plmkit."""
    torch.manual_seed(0)
    if family == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**GPT2, **overrides}, attn_implementation="eager"))
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA, **overrides},
                                                                    attn_implementation="eager"))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.add_(torch.randn_like(p) * (0.1 if name.endswith("bias") or "norm" in name or "ln_" in name else 0.05))
        hf.lm_head.weight.mul_(3)
    hf.eval().save_pretrained(tmp_path)
    return hf, AutoModelForCausalLM.from_pretrained(tmp_path)


def left_padded(pad: int = 0):
    """(3, 8) prompts, two of them padded on the left with ``pad``, and their mask."""
    ids = torch.randint(3, VOCAB, (3, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3], mask[2, :5] = 0, 0
    return ids.masked_fill(mask == 0, pad), mask


def seeded(model, *args, seed: int = 123, **kwargs):
    torch.manual_seed(seed)
    return model.generate(*args, **kwargs)


@pytest.fixture(params=["gpt2", "llama"])
def pair(request, tmp_path):
    return causal_pair(tmp_path, request.param)


def test_sampling_without_top_k_samples_among_transformers_default_50(pair):
    """transformers fills a top_k nobody set with 50: the same seed then gives the same tokens; the model's
    generation_config's top_k, and a top_k given, win over it."""
    hf, model = pair
    ids, mask = left_padded()
    for kw in (dict(), dict(temperature=0.7, top_p=0.7), dict(num_return_sequences=2)):
        kw = dict(attention_mask=mask, do_sample=True, max_new_tokens=10, **kw)
        expected = seeded(hf, ids, **kw)
        assert torch.equal(seeded(model, ids, **kw), expected), kw
    kw = dict(attention_mask=mask, do_sample=True, max_new_tokens=10)
    assert not torch.equal(seeded(model, ids, top_k=0, **kw), expected)  # (top-50 changes the draws here)
    assert torch.equal(seeded(model, ids, top_k=50, **kw), seeded(model, ids, **kw))
    hf.generation_config.top_k = model.generation_config.top_k = 5
    assert torch.equal(seeded(model, ids, **kw), seeded(hf, ids, **kw))
    assert torch.equal(seeded(model, ids, top_k=7, **kw), seeded(hf, ids, top_k=7, **kw))


def test_top_k_0_or_none_samples_without_top_k_as_transformers(pair):
    hf, model = pair
    ids, mask = left_padded()
    kw = dict(attention_mask=mask, do_sample=True, max_new_tokens=10, top_p=0.9)
    expected = seeded(hf, ids, top_k=0, **kw)
    assert torch.equal(seeded(model, ids, top_k=0, **kw), expected)
    assert torch.equal(seeded(model, ids, top_k=None, **kw), seeded(hf, ids, top_k=None, **kw))
    assert torch.equal(seeded(model, ids, top_k=None, **kw), expected)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prompts_without_a_mask_get_one_from_the_pad_id_as_transformers(tmp_path, family):
    """A mask left out is made of the positions holding the pad id (when it differs from EOS), as transformers
    makes it: the same tokens as with the mask; a pad id that is the EOS id makes none."""
    hf, model = causal_pair(tmp_path, family)
    ids, mask = left_padded()
    kw = dict(max_new_tokens=6, pad_token_id=0, return_dict_in_generate=True, output_logits=True)

    def logits(out):
        return torch.stack(out.logits)

    masked, unmasked = (model.generate(ids, attention_mask=m, **kw) for m in (mask, torch.ones_like(ids)))
    inferred, expected = model.generate(ids, **kw), hf.generate(ids, do_sample=False, **kw)
    assert torch.equal(inferred.sequences, expected.sequences) and torch.equal(inferred.sequences, masked.sequences)
    torch.testing.assert_close(logits(inferred), logits(masked))
    assert not torch.allclose(logits(unmasked), logits(masked))  # (the padding matters)
    assert torch.equal(model.generate(ids, num_beams=3, max_new_tokens=6, pad_token_id=0),
                       hf.generate(ids, num_beams=3, max_new_tokens=6, pad_token_id=0, do_sample=False))
    kw.update(eos_token_id=0)  # pad == eos: every position is a token
    inferred, expected = model.generate(ids, **kw), hf.generate(ids, do_sample=False, **kw)
    assert torch.equal(inferred.sequences, expected.sequences)
    torch.testing.assert_close(logits(inferred), logits(model.generate(ids, attention_mask=torch.ones_like(ids), **kw)))


def assert_same_output(ours, theirs):
    """The fields transformers' GenerateOutput and ours share: the same sequences and beam indices, scores and
    logits of the same shapes and values (the same -inf)."""
    assert isinstance(ours, GenerateOutput)
    assert set(ours.keys()) == set(theirs.keys()) - {"past_key_values", "cache"}
    assert torch.equal(ours.sequences, theirs.sequences) and torch.equal(ours[0], theirs.sequences)
    for name in ("scores", "logits"):
        if name in theirs:
            assert len(ours[name]) == len(theirs[name]) > 0  # one per step
            for a, b in zip(ours[name], theirs[name]):
                assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
                assert torch.equal(a.isinf(), b.isinf())
                torch.testing.assert_close(a.nan_to_num(0, 0, 0), b.nan_to_num(0, 0, 0), atol=1e-5, rtol=1e-5)
    if "beam_indices" in theirs:
        assert ours.beam_indices.dtype == theirs.beam_indices.dtype and torch.equal(ours.beam_indices,
                                                                                    theirs.beam_indices)
        if theirs.sequences_scores is not None:
            torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("settings", [
    dict(), dict(do_sample=True), dict(do_sample=True, num_return_sequences=3, top_k=10, repetition_penalty=1.3),
    dict(num_beams=3), dict(num_beams=4, num_return_sequences=2, eos_token_id=[7, 9], length_penalty=0.5),
    dict(num_beams=3, early_stopping=True, eos_token_id=7, no_repeat_ngram_size=2),
])
def test_return_dict_in_generate_gives_transformers_scores_and_logits(tmp_path, settings):
    hf, model = causal_pair(tmp_path, "gpt2")
    ids, mask = left_padded()
    kw = dict(attention_mask=mask, max_new_tokens=8, return_dict_in_generate=True, **settings)
    for outputs in (dict(output_scores=True, output_logits=True), dict(output_scores=True), dict(output_logits=True),
                    dict()):
        assert_same_output(seeded(model, ids, **kw, **outputs), seeded(hf, ids, **kw, **outputs))
    assert torch.equal(seeded(model, ids, **{**kw, "return_dict_in_generate": False}), seeded(hf, ids, **kw).sequences)


def test_an_encoder_decoders_return_dict_in_generate_is_transformers(tmp_path):
    torch.manual_seed(0)
    hf = roughen(transformers.BartForConditionalGeneration(transformers.BartConfig(
        **BART_TINY, forced_bos_token_id=0, attn_implementation="eager")), eos=2)
    hf.save_pretrained(tmp_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    ids, mask = padded([11, 7, 4], VOCAB, 1)
    for settings in (dict(), dict(do_sample=True, num_return_sequences=2), dict(num_beams=3, num_return_sequences=2)):
        kw = dict(attention_mask=mask, max_new_tokens=8, return_dict_in_generate=True, output_scores=True,
                  output_logits=True, **settings)
        assert_same_output(seeded(model, ids, **kw), seeded(hf, ids, **kw))


def test_use_cache_and_generation_config_are_taken_as_transformers_takes_them(pair, tmp_path):
    """use_cache either way gives the same tokens; generation_config= (a transformers GenerationConfig or a dict)
    sets what it sets over the model's defaults, the keywords win over it; output_attentions are refused."""
    hf, model = pair
    ids, mask = left_padded()
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=6)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=6, use_cache=False), plain)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=6, use_cache=True), plain)
    config = transformers.GenerationConfig(max_new_tokens=5, num_beams=3, no_repeat_ngram_size=2)
    expected = hf.generate(ids, attention_mask=mask, generation_config=config)
    assert expected.shape[1] == 13
    assert torch.equal(model.generate(ids, attention_mask=mask, generation_config=config), expected)
    assert torch.equal(model.generate(ids, attention_mask=mask, generation_config=config.to_dict()), expected)
    assert torch.equal(model.generate(ids, attention_mask=mask, generation_config=config, num_beams=1),
                       hf.generate(ids, attention_mask=mask, generation_config=config, num_beams=1))
    sampled = transformers.GenerationConfig(do_sample=True, max_new_tokens=7, temperature=0.8)
    assert torch.equal(seeded(model, ids, attention_mask=mask, generation_config=sampled),
                       seeded(hf, ids, attention_mask=mask, generation_config=sampled))
    with pytest.raises(ConfigError, match="generation_config"):
        model.generate(ids, generation_config=[("max_new_tokens", 3)])
    with pytest.raises(ConfigError, match=r"unknown generation setting\(s\) min_p"):
        model.generate(ids, generation_config=transformers.GenerationConfig(min_p=0.1))
    with pytest.raises(ConfigError, match="does not return attentions"):
        model.generate(ids, max_new_tokens=2, return_dict_in_generate=True, output_attentions=True)
    model.generate(ids, max_new_tokens=2, output_attentions=False, output_hidden_states=False)  # (what they say anyway)


def test_the_models_generation_config_has_attributes_and_is_saved(pair, tmp_path):
    hf, model = pair
    ids, mask = left_padded()
    assert isinstance(model.generation_config, GenerationConfig) and model.generation_config["eos_token_id"] == 2
    assert model.generation_config.top_k is None and model.generation_config.eos_token_id == 2
    model.generation_config.max_new_tokens = hf.generation_config.max_new_tokens = 4
    model.generation_config.no_repeat_ngram_size = hf.generation_config.no_repeat_ngram_size = 1
    model.generation_config.return_dict_in_generate = hf.generation_config.return_dict_in_generate = True
    out = model.generate(ids, attention_mask=mask)
    assert isinstance(out, GenerateOutput)
    assert torch.equal(out.sequences, hf.generate(ids, attention_mask=mask).sequences)
    assert out.sequences.shape[1] == 12
    with pytest.raises(AttributeError):
        model.generation_config.no_such_setting
    with pytest.raises(ConfigError, match="not a setting"):
        model.generation_config.min_p = 0.1
    model.generation_config.return_dict_in_generate = None  # unset
    assert "return_dict_in_generate" not in model.generation_config and model.generation_config.top_k is None
    model.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "generation_config.json").read_text())
    assert (saved["max_new_tokens"], saved["no_repeat_ngram_size"]) == (4, 1)
    again = type(model).from_pretrained(tmp_path / "ours")
    assert again.generation_config == model.generation_config
    assert again.generate(ids, attention_mask=mask).shape == (3, 12)
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "ours").max_new_tokens == 4
    model.generation_config = transformers.GenerationConfig(max_new_tokens=2)  # as transformers lets one set it
    assert model.generation_config == {"max_new_tokens": 2} and model.generate(ids).shape == (3, 10)
    model.generation_config = None
    assert model.generation_config == {}


def test_bert2bert_takes_the_tokenizers_token_type_ids_as_transformers(tmp_path):
    """generate(**tokenizer(...)) on a BERT-to-BERT: the token_type_ids go to the encoder (pairs of texts give
    other tokens than without them); an encoder without token types (BART) refuses them, as transformers does."""
    torch.manual_seed(0)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertConfig(**BERT), transformers.BertConfig(**BERT), decoder_start_token_id=2, pad_token_id=0,
        eos_token_id=3)
    hf = roughen(transformers.EncoderDecoderModel(config), skip="@none")
    hf.save_pretrained(tmp_path / "b2b")
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "b2b")
    ids, mask = padded([11, 7, 9], VOCAB, 0)
    types = (torch.arange(ids.shape[1]) >= 4).long().expand_as(ids) * mask
    for settings in (dict(max_new_tokens=6), dict(max_new_tokens=6, num_beams=3)):
        kw = dict(input_ids=ids, attention_mask=mask, **settings)
        expected = hf.generate(token_type_ids=types, do_sample=False, **kw)
        assert torch.equal(model.generate(token_type_ids=types, **kw), expected)
        assert not torch.equal(model.generate(**kw), expected)  # (the token types matter)
        assert torch.equal(model.generate(token_type_ids=torch.zeros_like(ids), **kw), model.generate(**kw))
    with pytest.raises(ConfigError, match="token_type_ids must be a tensor of the input ids' shape"):
        model.generate(ids, token_type_ids=types[:, :3])
    torch.manual_seed(0)
    bart = roughen(transformers.BartForConditionalGeneration(transformers.BartConfig(**BART_TINY)), eos=2)
    bart.save_pretrained(tmp_path / "bart")
    with pytest.raises(ConfigError, match="encoder of BartForConditionalGeneration takes none"):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "bart").generate(ids, token_type_ids=types, max_new_tokens=2)


def test_prompts_ending_with_the_pad_id_generate_with_every_position_a_token():
    """A mask made of the pad ids is used only where it is left padding: a prompt that ends with the pad id (a
    real token of it: pad 0 = <unk>, say), or is only that id, is generated from as it was before such masks."""
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                       pad_token_id=0, eos_token_id=2, bos_token_id=2)).eval()
    for prompt in ([[5, 6, 7, 0]], [[0]]):
        ids = torch.tensor(prompt)
        with pytest.warns(UserWarning, match="ends with pad_token_id=0"):
            out = model.generate(ids, max_new_tokens=3)
        assert torch.equal(out, model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3))
