"""Hugging Face's forward API in every family, against transformers in fp32: ``return_dict``, ``use_cache``
(the manual incremental-decoding loop), ``inputs_embeds``, bool / float / 4-D attention masks, the QA head on
padded batches, and the encoder-decoders' ``cross_attentions``."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

import plmkit.models.bert as bert  # noqa: E402
from plmkit import AutoModelForSeq2SeqLM  # noqa: E402
from plmkit.errors import InputError  # noqa: E402
from plmkit.models import AutoModelForCausalLM  # noqa: E402
from seq2seq_checks import TINY as S2S, TOL, labels_of, padded, roughen  # noqa: E402

BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, pad_token_id=0)
GPT2 = dict(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=37, bos_token_id=1,
            eos_token_id=2, pad_token_id=0)
LLAMA = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def saved(hf, path):
    hf.save_pretrained(path)
    return hf


def bert_pair(tmp_path, name="BertModel", **overrides):
    torch.manual_seed(0)
    hf = roughen(getattr(transformers, name)(transformers.BertConfig(**BERT, attn_implementation="eager",
                                                                      **overrides)), skip="@none")
    saved(hf, tmp_path)
    return hf, getattr(bert, name).from_pretrained(tmp_path).eval()


def bert_batch():
    ids, mask = padded([9, 6, 3], 99, 0)
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    return ids, mask, types


def decoder_pair(tmp_path, family):
    torch.manual_seed(0)
    if family == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2, attn_implementation="eager"))
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA, attn_implementation="eager"))
    saved(roughen(hf, skip="@none"), tmp_path)
    return hf, AutoModelForCausalLM.from_pretrained(tmp_path).eval()


def seq2seq_pair(tmp_path, family):
    """(HF model, ours, pad id) of a tiny random BART, Marian or BERT-to-BERT."""
    torch.manual_seed(0)
    if family == "bart":
        hf, pad = roughen(transformers.BartForConditionalGeneration(transformers.BartConfig(
            **S2S, attn_implementation="eager")), eos=2), 1
    elif family == "marian":
        hf, pad = roughen(transformers.MarianMTModel(transformers.MarianConfig(
            **S2S, pad_token_id=98, decoder_start_token_id=98, eos_token_id=0, forced_eos_token_id=0,
            activation_function="swish", scale_embedding=True, attn_implementation="eager")), eos=0), 98
    else:
        encoder, decoder = (transformers.BertConfig(**BERT, attn_implementation="eager") for _ in range(2))
        config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
            encoder, decoder, decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)
        hf, pad = roughen(transformers.EncoderDecoderModel(config), skip="@none"), 0
        hf.set_attn_implementation("eager")  # (the halves are built with HF's default, sdpa: no attentions)
    saved(hf, tmp_path)
    return hf, AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval(), pad


def assert_tuples_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        if isinstance(b, tuple):
            assert_tuples_equal(a, b)
        else:
            torch.testing.assert_close(a, b, **TOL)


# -- A: return_dict ---------------------------------------------------------------------------------------
def test_return_dict_false_gives_hf_s_tuple_in_every_family(tmp_path):
    ids, mask, types = bert_batch()
    hf, model = bert_pair(tmp_path / "cls", "BertForSequenceClassification", num_labels=3)
    with torch.no_grad():
        kw = dict(attention_mask=mask, labels=torch.tensor([0, 2, 1]), return_dict=False)
        assert_tuples_equal(model(ids, **kw), hf(ids, **kw))  # (loss, logits)
        kw = dict(attention_mask=mask, output_attentions=True, output_hidden_states=True, return_dict=False)
        ours, theirs = model(ids, **kw), hf(ids, **kw)  # (logits, hidden_states, attentions): real rows only
        assert len(ours) == len(theirs) == 3
        torch.testing.assert_close(ours[0], theirs[0], **TOL)
    hf, model = bert_pair(tmp_path / "base")
    with torch.no_grad():
        assert_tuples_equal(model(ids, return_dict=False), hf(ids, return_dict=False))
        assert isinstance(model(ids, return_dict=True), bert.BaseModelOutput)
    hf, model = decoder_pair(tmp_path / "gpt2", "gpt2")
    with torch.no_grad():
        ours, theirs = model(ids, labels=ids, return_dict=False), hf(ids, labels=ids, use_cache=False,
                                                                      return_dict=False)
        assert_tuples_equal(ours, theirs)  # (loss, logits)
    hf, model, pad = seq2seq_pair(tmp_path / "bart", "bart")
    src, src_mask = padded([7, 4], 99, pad)
    with torch.no_grad():
        ours = model(src, attention_mask=src_mask, labels=labels_of([5, 5], 99), return_dict=False)
        theirs = hf(src, attention_mask=src_mask, labels=labels_of([5, 5], 99), use_cache=False, return_dict=False)
    assert len(ours) == len(theirs) == 3  # (loss, logits, encoder_last_hidden_state)
    torch.testing.assert_close(ours[0], theirs[0], **TOL)
    torch.testing.assert_close(ours[1], theirs[1], **TOL)


# -- A: use_cache: Hugging Face's manual decoding loop ------------------------------------------------------
def greedy_loop(model, ids, steps, mask=None, **first):
    """HF's manual loop: one call on the prompt with use_cache=True, then one token at a time with the
    returned cache (and the mask extended by one column per step, when given)."""
    out = model(ids, attention_mask=mask, use_cache=True, **first)
    tokens = []
    for _ in range(steps):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        tokens.append(nxt)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        out = model(nxt, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(tokens, dim=1)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_manual_decoding_loop_with_use_cache_matches_hf_and_generate(tmp_path, family):
    hf, model = decoder_pair(tmp_path, family)
    prompt = torch.randint(3, 99, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = greedy_loop(model, prompt, 8)
        assert torch.equal(ours, greedy_loop(hf, prompt, 8))
        assert torch.equal(ours, model.generate(prompt, max_new_tokens=8, eos_token_id=None)[:, 5:])
        # a left-padded batch, the mask extended each step: the tokens generate gives
        ids, mask = padded([5, 3, 4], 99, 0)
        ids, mask = ids.flip(1), mask.flip(1)  # left padding
        expected = model.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None, pad_token_id=0)
        assert torch.equal(greedy_loop(model, ids, 6, mask), expected[:, ids.shape[1]:])
        # one step's logits against HF's full forward on the unpadded prompt + the token
        out = model(prompt, use_cache=True)
        step = model(prompt[:, :1], past_key_values=out.past_key_values, use_cache=False)
        torch.testing.assert_close(step.logits[:, -1], hf(torch.cat([prompt, prompt[:, :1]], 1)).logits[:, -1],
                                   **TOL)
        assert step.past_key_values is out.past_key_values  # (a given cache is used and returned)
        assert model(prompt, use_cache=False).past_key_values is None


@pytest.mark.parametrize("family", ["bart", "marian", "bert2bert"])
def test_seq2seq_manual_decoding_loop_matches_hf_and_generate(tmp_path, family):
    hf, model, pad = seq2seq_pair(tmp_path, family)
    src, src_mask = padded([9, 5, 7], 99, pad)
    start = torch.full((3, 1), model.config.decoder_start_token_id)

    def loop(m, steps=7):
        out = m(input_ids=src, attention_mask=src_mask, decoder_input_ids=start, use_cache=True)
        encoder_outputs, tokens = (out.encoder_last_hidden_state,), [start]
        for _ in range(steps):
            tokens.append(out.logits[:, -1].argmax(-1, keepdim=True))
            out = m(encoder_outputs=encoder_outputs, attention_mask=src_mask, decoder_input_ids=tokens[-1],
                    past_key_values=out.past_key_values, use_cache=True)
        return torch.cat(tokens, dim=1)

    with torch.no_grad():
        ours = loop(model)
        assert torch.equal(ours, loop(hf))
        generated = model.generate(src, attention_mask=src_mask, max_new_tokens=7)[:, 1:]  # (B, <= 7)
        eos = (generated == model.config.eos_token_id).long()
        keep = (eos.cumsum(1) - eos) == 0  # up to each row's first eos (then generate pads)
        keep[:, -1] = False  # (generate may force eos at the last step)
        assert keep.sum() > 3 and torch.equal(ours[:, 1:1 + generated.shape[1]][keep], generated[keep])
        # the source need not come again: the cache holds what the decoder reads of it
        out = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=start, use_cache=True)
        step = model(decoder_input_ids=ours[:, 1:2], past_key_values=out.past_key_values)
        full = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=ours[:, :2])
        torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], **TOL)
        assert model(input_ids=src, attention_mask=src_mask, decoder_input_ids=start,
                     use_cache=False).past_key_values is None


# -- A: inputs_embeds ---------------------------------------------------------------------------------------
def test_bert_inputs_embeds_get_positions_and_token_types_as_in_hf(tmp_path):
    ids, mask, types = bert_batch()
    for name in ("BertModel", "BertForTokenClassification", "BertForSequenceClassification"):
        hf, model = bert_pair(tmp_path / name, name, num_labels=3)
        embeds = torch.randn(*ids.shape, 32, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            ours = model(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types)
            theirs = hf(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types)
        keep = mask.bool()
        if name == "BertModel":
            torch.testing.assert_close(ours.last_hidden_state[keep], theirs.last_hidden_state[keep], **TOL)
            torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, **TOL)
        else:
            o, t = (ours.logits[keep], theirs.logits[keep]) if ours.logits.dim() == 3 else (ours.logits, theirs.logits)
            torch.testing.assert_close(o, t, **TOL)
    with pytest.raises(InputError, match="exactly one of input_ids and inputs_embeds"):
        model(ids, inputs_embeds=embeds)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_inputs_embeds_match_hf(tmp_path, family):
    hf, model = decoder_pair(tmp_path, family)
    ids, mask = padded([8, 5, 3], 99, 0)  # right padding: HF's positions 0.. are plmkit's
    embeds = torch.randn(3, 8, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = model(inputs_embeds=embeds, attention_mask=mask)
        theirs = hf(inputs_embeds=embeds, attention_mask=mask)
        torch.testing.assert_close(ours.logits[mask.bool()], theirs.logits[mask.bool()], **TOL)
        same = model(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=mask).logits
        torch.testing.assert_close(same, model(ids, attention_mask=mask).logits, **TOL)


@pytest.mark.parametrize("family", ["bart", "marian", "bert2bert"])
def test_seq2seq_inputs_embeds_are_scaled_as_in_hf(tmp_path, family):
    hf, model, pad = seq2seq_pair(tmp_path, family)
    src, src_mask = padded([9, 5, 7], 99, pad)
    labels = labels_of([6, 4, 2], 99)
    g = torch.Generator().manual_seed(5)
    embeds, decoder_embeds = torch.randn(3, 9, 32, generator=g), torch.randn(3, 6, 32, generator=g)
    with torch.no_grad():
        ours = model(inputs_embeds=embeds, attention_mask=src_mask, decoder_inputs_embeds=decoder_embeds,
                     labels=labels)
        theirs = hf(inputs_embeds=embeds, attention_mask=src_mask, decoder_inputs_embeds=decoder_embeds,
                    labels=labels)
    keep = labels != -100
    torch.testing.assert_close(ours.logits[keep], theirs.logits[keep], **TOL)
    torch.testing.assert_close(ours.loss, theirs.loss, **TOL)


# -- B: attention masks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.int32])
def test_bert_takes_bool_and_float_masks(tmp_path, dtype):
    ids, mask, types = bert_batch()
    hf, model = bert_pair(tmp_path)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask.to(dtype), token_type_ids=types).last_hidden_state
        theirs = hf(ids, attention_mask=mask.to(dtype), token_type_ids=types).last_hidden_state
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], **TOL)


def test_bert_takes_hf_s_prepared_4d_masks_and_names_additive_2d_ones(tmp_path):
    ids, mask, _ = bert_batch()
    hf, model = bert_pair(tmp_path)
    sdpa = transformers.BertModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()  # (HF's default)
    additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min  # (B, 1, 1, T)
    keep = mask[:, None, None, :].bool().expand(-1, 1, ids.shape[1], -1)  # (B, 1, T, T), True = attend
    with torch.no_grad():
        for four_d, reference in ((additive, hf), (additive, sdpa), (keep, sdpa)):
            ours, theirs = model(ids, attention_mask=four_d), reference(ids, attention_mask=four_d)
            torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, **TOL)  # every position
    with pytest.raises(InputError, match="must be 1 for tokens and 0 for padding"):
        model(ids, attention_mask=(mask.float() - 1) * 1e9)


@pytest.mark.parametrize("family", ["bart", "marian", "bert2bert"])
def test_seq2seq_takes_bool_and_float_masks_and_refuses_4d_ones(tmp_path, family):
    hf, model, pad = seq2seq_pair(tmp_path, family)
    src, src_mask = padded([9, 5, 7], 99, pad)
    labels = labels_of([6, 4, 2], 99)
    with torch.no_grad():
        theirs = hf(src, attention_mask=src_mask, labels=labels)
        for dtype in (torch.bool, torch.float32):
            ours = model(src, attention_mask=src_mask.to(dtype), labels=labels)
            torch.testing.assert_close(ours.loss, theirs.loss, **TOL)
            keep = labels != -100
            torch.testing.assert_close(ours.logits[keep], theirs.logits[keep], **TOL)
        dec, dec_mask = padded([6, 3, 5], 99, pad, seed=3)
        a = model(src, attention_mask=src_mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask.bool())
        b = hf(src, attention_mask=src_mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        torch.testing.assert_close(a.logits[dec_mask.bool()], b.logits[dec_mask.bool()], **TOL)
    with pytest.raises(InputError, match=r"4-D .* pass the \(batch, length\) mask"):
        model(src, attention_mask=src_mask[:, None, None, :], labels=labels)


# -- C: question answering on padded batches ----------------------------------------------------------------
def test_question_answering_logits_and_loss_match_hf_on_padded_batches(tmp_path):
    ids, mask, types = bert_batch()
    hf, model = bert_pair(tmp_path, "BertForQuestionAnswering")
    positions = dict(start_positions=torch.tensor([1, 2, 20]), end_positions=torch.tensor([3, 4, 1]))
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, token_type_ids=types, **positions)
        theirs = hf(ids, attention_mask=mask, token_type_ids=types, **positions)
    torch.testing.assert_close(ours.loss, theirs.loss, **TOL)
    for field in ("start_logits", "end_logits"):  # real positions (padding: plmkit's zeros, HF's values)
        torch.testing.assert_close(getattr(ours, field)[mask.bool()], getattr(theirs, field)[mask.bool()], **TOL)
    assert torch.isfinite(ours.start_logits).all()  # no finfo.min at padding


# -- D: cross-attentions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bart", "marian", "bert2bert"])
def test_cross_attentions_match_hf(tmp_path, family):
    hf, model, pad = seq2seq_pair(tmp_path, family)
    src, src_mask = padded([9, 5, 7], 99, pad)
    labels = labels_of([6, 4, 2], 99)
    with torch.no_grad():
        ours = model(src, attention_mask=src_mask, labels=labels, output_attentions=True)
        theirs = hf(src, attention_mask=src_mask, labels=labels, output_attentions=True)
        assert len(ours.cross_attentions) == len(theirs.cross_attentions) == 2
        keep = labels != -100  # decoder rows of labelled positions; every source column, padding included
        for a, b in zip(ours.cross_attentions, theirs.cross_attentions, strict=True):
            assert a.shape == b.shape == (3, 4, 6, 9)
            torch.testing.assert_close(a.transpose(1, 2)[keep], b.transpose(1, 2)[keep], **TOL)
            assert float(a[1, :, :, 5:].abs().max()) < 1e-6  # source padding gets nothing
        # one step on a cache (rows of a cached source): each row's own probabilities
        dec = labels.masked_fill(labels == -100, 5)
        out = model(src, attention_mask=src_mask, decoder_input_ids=dec[:, :2], use_cache=True,
                    output_attentions=True)
        step = model(decoder_input_ids=dec[:, 2:3], past_key_values=out.past_key_values, output_attentions=True)
        full = hf(src, attention_mask=src_mask, decoder_input_ids=dec[:, :3], output_attentions=True)
        for a, b in zip(step.cross_attentions, full.cross_attentions, strict=True):
            torch.testing.assert_close(a[:, :, -1], b[:, :, -1], **TOL)


@pytest.mark.parametrize("family", ["gpt2", "bart"])
def test_the_returned_cache_has_transformers_methods_for_hand_written_loops(tmp_path, family):
    """get_seq_length() and reorder_cache(beam_idx) (a hand-written beam search), as DynamicCache's; an
    encoder-decoder's reorders its cross-attention keys, values and source mask too."""
    if family == "gpt2":
        _, model = decoder_pair(tmp_path, family)
        ids, mask = padded([5, 3], 99, 0)
        first = dict(input_ids=ids.flip(1), attention_mask=mask.flip(1))  # (left padding)
    else:
        _, model, pad = seq2seq_pair(tmp_path, family)
        src, src_mask = padded([6, 3], 99, pad)
        first = dict(input_ids=src, attention_mask=src_mask,
                     decoder_input_ids=torch.full((2, 1), model.config.decoder_start_token_id))

    def step(cache, rows, tokens):  # the next token's logits of each row (B, V)
        if family == "bart":
            return model(decoder_input_ids=tokens, past_key_values=cache).logits[:, -1]
        mask = torch.cat([first["attention_mask"][rows], torch.ones(2, 1, dtype=torch.long)], 1)
        return model(tokens, attention_mask=mask, past_key_values=cache).logits[:, -1]

    swap, tokens = torch.tensor([1, 0]), torch.tensor([[7], [8]])
    with torch.no_grad():
        cache = model(**first, use_cache=True).past_key_values
        assert cache.get_seq_length() == (first["input_ids"].shape[1] if family == "gpt2" else 1)
        in_order = step(model(**first, use_cache=True).past_key_values, torch.tensor([0, 1]), tokens[swap])
        cache.reorder_cache(swap)
        torch.testing.assert_close(step(cache, swap, tokens), in_order[swap], **TOL)
        assert cache.get_seq_length() == (first["input_ids"].shape[1] + 1 if family == "gpt2" else 2)
