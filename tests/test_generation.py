"""generate() / stream(): caching, causality, padding, sampling, filters, beams, stop strings."""
import math
import warnings

import pytest
import torch

from plmkit.generation import GenerationSettings, IncrementalDecoder, repetition_penalty_, top_k_filter, top_p_filter
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM

GPT2_TINY = dict(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, eos_token_id=2, pad_token_id=0)
LLAMA_TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, eos_token_id=2, pad_token_id=0)


def make(family):
    torch.manual_seed(0)
    model = (GPT2LMHeadModel(GPT2Config(**GPT2_TINY)) if family == "gpt2" else
             LlamaForCausalLM(LlamaConfig(**LLAMA_TINY)))
    with torch.no_grad():  # sharper distributions than the tiny init gives
        model.lm_head.weight.mul_(20)
    return model.eval()


@pytest.fixture(params=["gpt2", "llama"])
def model(request):
    return make(request.param)


def test_cached_decoding_equals_full_forward(model):
    ids = torch.randint(3, 300, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = model.make_cache(2, 9)
        pieces = [model(ids[:, :5], attention_mask=mask[:, :5], past_key_values=cache).logits]
        for i in range(5, 9):
            pieces.append(model(ids[:, i:i + 1], attention_mask=mask[:, :i + 1], past_key_values=cache).logits)
        pieces.append(None)
    stepwise = torch.cat(pieces[:-1], dim=1)
    keep = mask.bool()
    torch.testing.assert_close(stepwise[keep], full[keep], atol=1e-5, rtol=1e-5)


def test_generate_equals_uncached_greedy_loop(model):
    ids = torch.randint(3, 300, (1, 5))
    out = model.generate(ids, max_new_tokens=8, eos_token_id=[])
    seq = ids
    with torch.no_grad():
        for _ in range(8):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)


def test_presence_and_frequency_penalties_count_the_new_tokens_only():
    sequences = torch.tensor([[5, 5, 1, 1, 1, 2], [4, 3, 3, 3, 0, 5]])  # 3 prompt tokens, then 3 new ones
    s = GenerationSettings(presence_penalty=0.5, frequency_penalty=0.25)
    out = s.process(torch.zeros(2, 6), sequences, step=3)
    # row 0 generated 1, 1, 2: token 1 loses 0.5 + 2 x 0.25, token 2 0.5 + 0.25 (the prompt's 5 and 1 do not count)
    # row 1 generated 3, 0, 5: each once
    assert out.tolist() == [[0, -1.0, -0.75, 0, 0, 0], [-0.75, 0, 0, -0.75, 0, -0.75]]
    negative = GenerationSettings(presence_penalty=-1.0, frequency_penalty=0.0).process(torch.zeros(2, 6), sequences, 3)
    assert negative.tolist() == [[0, 1, 1, 0, 0, 0], [1, 0, 0, 1, 0, 1]]
    assert s.process(torch.zeros(2, 6), sequences, 0).eq(0).all()  # nothing generated yet


def test_penalised_generate_equals_a_loop_that_counts_by_hand(model):
    ids = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(0))
    out = model.generate(ids, max_new_tokens=20, eos_token_id=[], presence_penalty=2.0, frequency_penalty=1.0)
    seq, counts = ids, {}
    with torch.no_grad():
        for _ in range(20):
            logits = model(seq).logits[0, -1].clone()
            for token, c in counts.items():
                logits[token] -= 1.0 * c + 2.0
            token = int(logits.argmax())
            counts[token] = counts.get(token, 0) + 1
            seq = torch.cat([seq, torch.tensor([[token]])], 1)
    assert torch.equal(out, seq)
    assert not torch.equal(out, model.generate(ids, max_new_tokens=20, eos_token_id=[]))  # (the penalties mattered)


def test_causal_property(model):
    ids = torch.randint(3, 300, (1, 10))
    changed = ids.clone()
    changed[0, 6] = (ids[0, 6] + 1) % 300
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_left_padded_batch_equals_each_prompt_alone(model):
    prompts = [torch.randint(3, 300, (n,)) for n in (6, 3, 4)]
    ids = torch.zeros(3, 6, dtype=torch.long)
    mask = torch.zeros(3, 6, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, 6 - len(p):], mask[row, 6 - len(p):] = p, 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=[])
    for row, p in enumerate(prompts):
        assert torch.equal(batched[row, 6:], model.generate(p, max_new_tokens=6, eos_token_id=[])[len(p):])


def test_eos_stops_and_pads(model):
    ids = torch.randint(3, 300, (2, 4))
    free = model.generate(ids, max_new_tokens=6, eos_token_id=[])
    eos = int(free[0, 5])  # the second new token of row 0 becomes "EOS"
    out = model.generate(ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    first = (free[0, 4:] == eos).nonzero()[0, 0] + 4
    assert out[0, first] == eos and (out[0, first + 1:] == 0).all()
    with pytest.raises(ValueError, match="pad_token_id"):
        GPT2LMHeadModel(GPT2Config(**{**GPT2_TINY, "pad_token_id": None})).generate(ids, max_new_tokens=2)
    lone = model.generate(ids[:1], max_new_tokens=6, eos_token_id=eos, min_new_tokens=6)
    assert lone.shape[1] == 10 and eos not in lone[0, 4:].tolist()


def test_right_padded_prompt_is_refused(model):
    with pytest.raises(Exception, match=r"row\(s\) \[1\] of the batch are padded on the right.*left"):
        model.generate(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))


def test_an_empty_prompt_in_a_padded_batch_is_named(model):
    """tokenizer(["", "the cat"], padding=True) on the left: the empty row is the problem, not the side."""
    with pytest.raises(Exception, match=r"prompt row\(s\) \[0\] of the batch have no tokens \(attention_mask all 0\)"):
        model.generate(torch.ones(2, 2, dtype=torch.long), attention_mask=torch.tensor([[0, 0], [1, 1]]),
                       max_new_tokens=2, pad_token_id=0)


def test_sampling_is_reproducible(model):
    ids = torch.randint(3, 300, (2, 4))
    kw = dict(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, eos_token_id=[])
    a, b = model.generate(ids, seed=7, **kw), model.generate(ids, seed=7, **kw)
    assert torch.equal(a, b)
    assert any(not torch.equal(a, model.generate(ids, seed=s, **kw)) for s in (8, 9, 10))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(model.generate(ids, generator=g, **kw), a)


def test_top_k_filter_keeps_exactly_k():
    scores = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.0, 0.0, 1.0, -1.0, 0.5]])
    out = top_k_filter(scores, 2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True, False], [False, False, True, False, True]]
    assert torch.equal(out[torch.isfinite(out)], scores[torch.isfinite(out)])
    assert torch.isfinite(top_k_filter(scores, 10)).all()


def test_top_p_filter_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    scores = probs.log()
    keep = lambda p: torch.isfinite(top_p_filter(scores, p))[0].tolist()  # noqa: E731
    assert keep(0.4) == [False, True, False, False]
    assert keep(0.75) == [False, True, False, True]
    assert keep(0.9) == [False, True, True, True]
    assert keep(0.99) == [True, True, True, True]
    assert keep(1e-6) == [False, True, False, False]  # always at least one


def test_top_p_agrees_with_hf():
    tf = pytest.importorskip("transformers")
    scores = torch.randn(4, 50) * 3
    for p in (0.3, 0.8, 0.95):
        hf = tf.TopPLogitsWarper(p)(None, scores.clone())
        assert torch.equal(torch.isfinite(top_p_filter(scores, p)), torch.isfinite(hf))
    hf = tf.TopKLogitsWarper(7)(None, scores.clone())
    assert torch.equal(top_k_filter(scores, 7), hf)


def test_repetition_penalty_rule_matches_hf():
    tf = pytest.importorskip("transformers")
    scores = torch.randn(2, 10)
    seqs = torch.tensor([[1, 2, 2, 5], [0, 9, 3, 3]])
    expected = tf.RepetitionPenaltyLogitsProcessor(1.3)(seqs, scores.clone())
    assert torch.equal(repetition_penalty_(scores.clone(), seqs, 1.3), expected)


def test_beam_search_with_one_beam_is_greedy(model):
    ids = torch.randint(3, 300, (2, 5))
    greedy = model.generate(ids, max_new_tokens=7, eos_token_id=[])
    s = GenerationSettings(max_new_tokens=7, num_beams=1)
    assert torch.equal(model._beam_search(ids, None, s), greedy)


def test_beam_search_finds_a_likelier_sequence(model):
    ids = torch.randint(3, 300, (1, 5))

    def logprob(seq):
        with torch.no_grad():
            lp = model(seq).logits[:, 4:-1].log_softmax(-1)
        return lp.gather(-1, seq[:, 5:, None]).sum()
    greedy = model.generate(ids, max_new_tokens=6, eos_token_id=[])
    beams = model.generate(ids, max_new_tokens=6, eos_token_id=[], num_beams=4)
    assert beams.shape == greedy.shape and logprob(beams) >= logprob(greedy) - 1e-5


def test_positions_limit_is_checked():
    m = GPT2LMHeadModel(GPT2Config(**GPT2_TINY)).eval()
    with pytest.raises(Exception, match="positions"):
        m.generate(torch.ones(1, 60, dtype=torch.long), max_new_tokens=10)


# -- tokenizer-dependent: stream, stop strings ------------------------------------------------------
TEXTS = ["Hello world, hello there!", "自然语言处理很有趣。", "emoji 🙂🚀 and café naïve", "The quick brown fox."]


@pytest.fixture(scope="module")
def tokenizer():
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=300, initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                     special_tokens=["<pad>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(TEXTS * 5, trainer)
    return tok


def test_incremental_decoder_never_splits_characters(tokenizer):
    for text in TEXTS:
        ids = tokenizer.encode(text).ids
        dec = IncrementalDecoder(tokenizer)
        pieces = [dec.push(i) for i in ids] + [dec.flush()]
        assert "".join(pieces) == text
        assert not any("\ufffd" in p for p in pieces)
        assert len([p for p in pieces if p]) > 1


def test_incremental_decoder_shows_byte_fallback_characters_once_complete():
    """Byte tokens (<0xNN>, plmkit's bpe / unigram tokenizers; CJK text in Llama's vocabulary) show as soon as
    they spell a whole character, not when their run ends; together, the pieces are decode's text."""
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.train(["the café serves crème brûlée", "plain words here"] * 40, 300, model="bpe", style="marian")
    words = tok.encode(" plain words", add_special_tokens=False)
    run = ["<0x4E>", "<0x4E>", "<0xE6>", "<0x9C>", "<0xAC>", "<0xC3>", "<0xA9>"]  # "N", "N", "本", "é"
    ids = tok.convert_tokens_to_ids(run) + words
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert pieces[:7] == ["N", "N", "", "", "本", "", "é"]
    assert "".join(pieces) == tok.decode(ids)


CLEAN_UP_TEXTS = ["it's here, they're sure!", "Don't go . I 'm sure it ' s ok , isn't it ?", "a ' ' b n 't , ! ?"]


@pytest.mark.parametrize("which", ["minilm", "unigram"])
def test_incremental_decoder_cleans_up_spaces_across_windows_as_decode(which, minilm_dir):
    """With clean_up_tokenization_spaces, " ' ", " ," or " n't" spanning windows are joined as decode joins them."""
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.from_pretrained(minilm_dir, clean_up_tokenization_spaces=True) if which == "minilm" else \
        Tokenizer.train(CLEAN_UP_TEXTS * 40, 300, model="unigram", style="marian")
    tok.clean_up_tokenization_spaces = True
    for text in CLEAN_UP_TEXTS:
        ids = tok.encode(text)
        dec = IncrementalDecoder(tok)
        pieces = [dec.push(i) for i in ids] + [dec.flush()]
        assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True), pieces


def test_incremental_decoder_with_clean_up_shows_ordinary_words_at_once(minilm_dir):
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.from_pretrained(minilm_dir, clean_up_tokenization_spaces=True)
    dec = IncrementalDecoder(tok)
    assert [dec.push(i) for i in tok.encode("hello world then", add_special_tokens=False)] == \
        ["hello", " world", " then"]


def test_stream_yields_the_generated_text(model, tokenizer):
    prompt = "Hello world"
    kw = dict(max_new_tokens=12, eos_token_id=[], do_sample=True, seed=3)
    pieces = list(model.stream(tokenizer, prompt, **kw))
    ids = torch.tensor([tokenizer.encode(prompt).ids])
    new = model.generate(ids, **kw)[0, ids.shape[1]:].tolist()
    assert "".join(pieces) == tokenizer.decode(new)


def test_stop_strings(model, tokenizer):
    ids = torch.tensor([tokenizer.encode("The quick").ids])
    t = ids.shape[1]
    free = model.generate(ids, max_new_tokens=12, eos_token_id=[])
    stop = tokenizer.decode(free[0, t + 3:t + 5].tolist())
    out = model.generate(ids, max_new_tokens=12, eos_token_id=[], stop_strings=[stop], tokenizer=tokenizer)
    n = next(n for n in range(1, 13) if stop in tokenizer.decode(free[0, t:t + n].tolist()))
    assert torch.equal(out, free[:, :t + n])
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(ids, stop_strings=["x"])


def test_generate_keeps_weight_values_and_train_restores_the_layout(model, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    ids = torch.randint(3, 300, (1, 4))
    out = model.generate(ids, max_new_tokens=3, eos_token_id=[])
    assert not out.is_inference()  # usable as an input to training
    assert all(p is params[n] for n, p in model.named_parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.lm_head.weight.is_contiguous()  # column-major, kept for the next generate call
    model.save_pretrained(tmp_path)
    assert torch.equal(type(model).from_pretrained(tmp_path).generate(ids, max_new_tokens=3, eos_token_id=[]), out)
    model.train()
    assert all(v.is_contiguous() for v in model.state_dict().values())
    model(out, labels=out).loss.backward()
    assert not any(p.is_inference() for p in model.parameters())


def test_bad_settings_are_config_errors_and_sampling_knobs_only_checked_when_sampling(model):
    from plmkit.errors import ConfigError
    ids = torch.tensor([[5, 6, 7]])
    for bad in (dict(max_new_tokens=0), dict(max_new_tokens=-1), dict(do_sample=True, temperature=0.0),
                dict(do_sample=True, top_p=0.0), dict(do_sample=True, top_p=1.5), dict(do_sample=True, top_k=-1),
                dict(num_beams=0), dict(num_beams=2, do_sample=True), dict(max_new_tokens=2.5),
                dict(eos_token_id=300), dict(eos_token_id=[2, -5]), dict(pad_token_id=10**6), dict(do_sample=True, seed=2**70),
                dict(presence_penalty=2.5), dict(frequency_penalty=-3)):
        with pytest.raises(ConfigError):  # a PlmkitError: the CLI reports it without a traceback
            model.generate(ids, **bad)
    # as in Hugging Face, greedy decoding ignores the sampling settings (temperature 0 included), and says so
    greedy = model.generate(ids, max_new_tokens=4, eos_token_id=[])
    with pytest.warns(UserWarning, match=r"temperature=0.0, top_p=0.0 only apply when sampling"):
        assert torch.equal(model.generate(ids, max_new_tokens=4, eos_token_id=[], temperature=0.0, top_p=0.0), greedy)
    with warnings.catch_warnings():  # values that sample as not giving them would (a server's greedy rows) are quiet
        warnings.simplefilter("error")
        assert torch.equal(model.generate(ids, max_new_tokens=4, eos_token_id=[], temperature=1.0, top_p=1.0,
                                          top_k=0), greedy)


def test_generating_past_a_rotary_models_trained_length_warns():
    import warnings
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**LLAMA_TINY, "max_position_embeddings": 16})).eval()
    prompt = torch.randint(3, 50, (1, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the trained length: silent
        model.generate(prompt, max_new_tokens=6, do_sample=False)
    with pytest.warns(UserWarning, match="20 positions, beyond the 16 this model was trained on"):
        out = model.generate(prompt, max_new_tokens=10, do_sample=False)
    assert out.shape[1] == 20  # it still generates, as rotary models can


def test_prompts_that_are_no_prompt_are_named(model, tokenizer):
    from plmkit.errors import ConfigError
    with pytest.raises(ConfigError, match="input_ids has no tokens"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ConfigError, match=r"tensor of token ids \(integers\), got \(1, 2\) torch.float32"):
        model.generate(torch.ones(1, 2), max_new_tokens=2)
    with pytest.raises(ConfigError, match="got list"):
        model.generate([[5, 6]], max_new_tokens=2)
    with pytest.raises(ConfigError, match="got NoneType"):
        list(model.stream(tokenizer, None, max_new_tokens=2))


def test_an_empty_prompt_starts_from_the_bos_token(model):
    from types import SimpleNamespace
    from plmkit.generation import prompt_ids
    tok = SimpleNamespace(encode=lambda text: [], bos_token_id=None, eos_token_id=2)
    assert prompt_ids(tok, "") == [2]
    with pytest.raises(Exception, match="no bos or eos token"):
        prompt_ids(SimpleNamespace(encode=lambda text: [], bos_token_id=None, eos_token_id=None), "")


def test_new_processors_agree_with_hfs():
    """n-gram blocking, banned words, minimum lengths, forced BOS / EOS: the same scores as Hugging
    Face's processors (GenerationSettings.process, decoder-only and encoder-decoder alike)."""
    tf = pytest.importorskip("transformers")
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, 6, (5, 12), generator=g)  # a small alphabet: n-grams repeat
    scores = torch.randn(5, 10, generator=g)
    for n in (1, 2, 3, 13):
        expected = tf.NoRepeatNGramLogitsProcessor(n)(seqs, scores.clone())
        assert torch.equal(GenerationSettings(no_repeat_ngram_size=n).process(scores.clone(), seqs, 0), expected)
    words = [[4], [seqs[0, -1].item(), 7], [seqs[1, -2].item(), seqs[1, -1].item(), 8], [2]]
    expected = tf.NoBadWordsLogitsProcessor(words, eos_token_id=2)(seqs, scores.clone())
    s = GenerationSettings(bad_words_ids=tuple(map(tuple, words[:3])), eos_token_ids=(2,))
    assert torch.equal(s.process(scores.clone(), seqs, 0), expected)
    expected = tf.MinLengthLogitsProcessor(13, [2, 3])(seqs, scores.clone())
    assert torch.equal(GenerationSettings(min_length=13, eos_token_ids=(2, 3)).process(scores.clone(), seqs, 5), expected)
    expected = tf.ForcedBOSTokenLogitsProcessor(4)(seqs[:, :1], scores.clone())
    assert torch.equal(GenerationSettings(forced_bos_token_id=4).process(scores.clone(), seqs[:, :1], 0), expected)
    expected = tf.ForcedEOSTokenLogitsProcessor(13, [2, 3])(seqs, scores.clone())  # max length 13 = 12 + 1
    s = GenerationSettings(max_new_tokens=5, forced_eos_token_ids=(2, 3))
    assert torch.equal(s.process(scores.clone(), seqs, 4), expected)
    assert torch.equal(s.process(scores.clone(), seqs, 3), scores)


def test_no_repeat_ngram_ignores_ids_past_the_lm_heads_columns():
    """A prompt id the LM head has no column for (its embeddings have more rows) bans nothing, least of all the last
    real token (transformers 5 sends it to a spare column); in-range n-grams are still banned."""
    from plmkit.generation import no_repeat_ngram_
    scores = no_repeat_ngram_(torch.zeros(1, 5), torch.tensor([[1, 7, 1]]), 2)  # (1, 7) would ban id 7
    assert torch.equal(scores, torch.zeros(1, 5))
    scores = no_repeat_ngram_(torch.zeros(1, 5), torch.tensor([[1, 7, 1, 3, 9, 1]]), 2)
    assert scores[0].tolist() == [0, 0, 0, -math.inf, 0]
    tf = pytest.importorskip("transformers")
    seqs = torch.randint(0, 8, (6, 12), generator=torch.Generator().manual_seed(1))
    for n in (1, 2, 3):
        expected = tf.NoRepeatNGramLogitsProcessor(n)(seqs, torch.zeros(6, 5))
        assert torch.equal(no_repeat_ngram_(torch.zeros(6, 5), seqs, n), expected)


def test_decoding_defaults_come_from_the_generation_config_then_the_call(model):
    ids = torch.randint(3, 300, (1, 4))
    model.generation_config = {"max_new_tokens": 3, "no_repeat_ngram_size": 1, "eos_token_id": []}
    out = model.generate(ids)
    assert out.shape[1] == 7 and len(set(out[0, 4:].tolist())) == 3
    assert model.generate(ids, max_new_tokens=5).shape[1] == 9  # the call wins
    assert model.generate(ids, max_length=6).shape[1] == 6  # a total length, prompt included
    model.generation_config = None


@pytest.mark.parametrize("settings, message", [
    (dict(max_new_tokens="5"), r"generate: max_new_tokens must be int, got '5' \(str\)"),
    (dict(num_beams=1.5), r"generate: num_beams must be int, got 1.5"),
    (dict(temperature=-1), r"generate: temperature must be >= 0, got -1"),
    (dict(eos_token_id="2"), r"generate: eos_token_id must be a list of int, got \('2',\)"),
    (dict(pad_token_id=300), r"pad_token_id must be a token id of this model's 300-token vocabulary"),
    (dict(max_length="9"), r"generate: max_length must be an integer >= 1, got str '9'"),
    (dict(attention_mask=torch.ones(1, 2, dtype=torch.long)), r"attention_mask has shape \(1, 2\), but the input "
                                                               r"ids are \(1, 3\)"),
    (dict(attention_mask=torch.ones(1, 3)), r"attention_mask must hold integer ids, got torch.float32"),
])
def test_generate_names_a_bad_argument(model, settings, message):
    from plmkit.errors import PlmkitError
    with pytest.raises(PlmkitError, match=message):
        model.generate(torch.tensor([[5, 6, 7]]), **settings)


def test_a_forward_call_refuses_float_ids(model):
    from plmkit.errors import InputError
    with pytest.raises(InputError, match="input_ids must hold integer ids, got torch.float32"):
        model(torch.tensor([[5.0, 6.0]]))


# -- against transformers' generate, on a tiny random GPT-2 --------------------------------------------
def hf_gpt2(tmp_path, **overrides):
    """A tiny random transformers GPT-2 (a sharper LM head than the tiny init gives; random biases and
    norms: differences would show) and the same weights loaded by plmkit."""
    tf = pytest.importorskip("transformers")
    config = dict(vocab_size=30, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=37, bos_token_id=1,
                  eos_token_id=2)
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(**{**config, **overrides}, attn_implementation="eager")).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
        hf.lm_head.weight.mul_(3)
    hf.save_pretrained(tmp_path)
    return hf, GPT2LMHeadModel.from_pretrained(tmp_path)


def test_repetition_penalty_skips_the_left_padding_as_hf(tmp_path):
    """A padded row equals its prompt alone and transformers' (which ignores the padding: prompt_ignore_length),
    the pad id being the token the short prompt continues with, that a penalised padding would ban."""
    hf, model = hf_gpt2(tmp_path)
    short = torch.tensor([[11, 4, 9]])
    kw = dict(max_new_tokens=6, repetition_penalty=1.5)
    pad = int(model.generate(short, max_new_tokens=1, eos_token_id=[], repetition_penalty=1.5)[0, -1])
    ids = torch.tensor([[12, 13, 14, 15, 16, 17], [pad, pad, pad, 11, 4, 9]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    alone = model.generate(short, eos_token_id=[], **kw)
    for beams in (1, 3):
        expected = hf.generate(ids, attention_mask=mask, do_sample=False, num_beams=beams, eos_token_id=None,
                               pad_token_id=pad, **kw)
        got = model.generate(ids, attention_mask=mask, num_beams=beams, eos_token_id=[], pad_token_id=pad, **kw)
        assert torch.equal(got, expected), beams
    assert torch.equal(got[1, 6:], model.generate(short, num_beams=3, eos_token_id=[], **kw)[0, 3:])
    greedy = model.generate(ids, attention_mask=mask, eos_token_id=[], pad_token_id=pad, **kw)
    assert torch.equal(greedy[1, 6:], alone[0, 3:])


def test_one_prompts_samples_without_a_pad_id_are_filled_with_eos_as_hf(tmp_path):
    """One prompt, num_return_sequences > 1, no pad id: a row that ends repeats EOS (transformers' fill)
    instead of sampling on; the same sampled tokens as transformers from the same seed."""
    hf, model = hf_gpt2(tmp_path)
    assert model.config.pad_token_id is None
    ids = torch.tensor([[5, 6, 7]])
    kw = dict(do_sample=True, num_return_sequences=4, max_new_tokens=25)
    torch.manual_seed(0)
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    torch.manual_seed(0)
    got = model.generate(ids, **kw)
    assert torch.equal(got, expected)
    ended = [row[row.index(2):] for row in got[:, 3:].tolist() if 2 in row]
    assert ended and all(set(rest) == {2} for rest in ended) and any(len(rest) > 1 for rest in ended)
    with pytest.raises(ValueError, match="pad_token_id"):  # stop strings without an EOS to fill with
        model.generate(ids, eos_token_id=[], stop_strings=["x"], tokenizer=object(), **kw)


def test_min_new_tokens_replaces_min_length_as_hf(tmp_path):
    """transformers lets min_new_tokens win over min_length, given or from the generation config (BART-CNN's
    min_length 56 with a call's min_new_tokens=5 allows EOS after 5 new tokens)."""
    hf, model = hf_gpt2(tmp_path, pad_token_id=0)
    ids = torch.tensor([[13, 22, 15, 21, 4, 8, 19]])
    kw = dict(max_new_tokens=9, no_repeat_ngram_size=2)  # (this model would repeat its last token)
    free = model.generate(ids, eos_token_id=[], **kw)
    kw.update(eos_token_id=int(free[0, 8]), min_new_tokens=1)  # EOS: the second new token
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, min_length=12, **kw)
    assert expected.shape[1] < 12  # EOS before min_length
    assert torch.equal(model.generate(ids, min_length=12, **kw), expected)
    model.generation_config = {**model.generation_config, "min_length": 12}
    hf.generation_config.min_length = 12
    assert torch.equal(model.generate(ids, **kw), hf.generate(ids, attention_mask=torch.ones_like(ids), **kw))
