import pytest

import finetune_helpers as h
import plmkit
from plmkit.errors import CheckpointError, ConfigError, DataError
from plmkit.recipes.finetune import finetune


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    zh = h.data_dir("zh-sentiment")
    finetune("classification", h.tiny_model_dir(), h.head_lines(zh / "train.jsonl", tmp / "zh.jsonl", 150),
             tmp / "cls", None, **h.quick(max_steps=4))
    ner = h.data_dir("zh-ner")
    finetune("ner", h.tiny_model_dir(), h.head_conll(ner / "train.conll", tmp / "ner.conll", 100),
             tmp / "ner", None, **h.quick(max_steps=4))
    finetune("qa", h.tiny_model_dir(), h.squad_file(tmp / "squad.json"), tmp / "qa", None,
             **h.quick(max_steps=3, max_length=48, doc_stride=16))
    return tmp


def test_text_classification_pipeline(trained):
    clf = plmkit.pipeline("text-classification", model=trained / "cls" / "model")
    assert clf.task == "text-classification"  # HF: the pipeline's name
    out = clf(["这个手机很好用", "质量太差了", "一般"])
    assert len(out) == 3 and all(set(r) == {"label", "score"} and r["label"] in ("negative", "positive") for r in out)
    assert isinstance(clf("很好"), list)  # HF: a list of one dict for one text
    both = clf("很好", top_k=None)  # HF: one text with top_k gives a flat list of dicts
    assert len(both) == 2 and both[0]["score"] >= both[1]["score"]


def test_text_classification_top_k_shapes_follow_hf(trained):
    clf = plmkit.pipeline("text-classification", model=trained / "cls" / "model")
    one, two = clf("很好", top_k=2), clf("很好", top_k=1)
    assert isinstance(one, list) and len(one) == 2 and all(isinstance(r, dict) for r in one)
    assert isinstance(two, list) and len(two) == 1 and isinstance(two[0], dict)
    many = clf(["很好", "太差"], top_k=1)  # explicit top_k: one list per text, as in HF
    assert len(many) == 2 and all(isinstance(r, list) and len(r) == 1 for r in many)
    assert all(isinstance(r, dict) for r in clf(["很好", "太差"]))  # no top_k: one dict per text


def test_token_classification_pipeline(trained):
    ner = plmkit.pipeline("token-classification", model=trained / "ner" / "model")
    text = "钱其琛在北京会见了美国总统"
    for piece in ner(text, ignore_labels=[]):  # HF's default: one dict per piece ("none")
        assert set(piece) == {"entity", "score", "index", "word", "start", "end"}
        assert text[piece["start"]:piece["end"]] == piece["word"]
    assert [p["index"] for p in ner(text, ignore_labels=[])] == list(range(1, len(text) + 1))
    for entity in ner(text, aggregation_strategy="simple", ignore_labels=[]):
        assert set(entity) == {"entity_group", "score", "word", "start", "end"}
    assert len(ner([text, "我爱北京"])) == 2


def test_question_answering_pipeline(trained):
    qa = plmkit.pipeline("question-answering", model=trained / "qa" / "model")
    context = "The Eiffel Tower is in Paris. It was finished in 1889."
    r = qa(question="Where is the Eiffel Tower?", context=context)
    assert set(r) == {"answer", "score", "start", "end"} and context[r["start"]:r["end"]] == r["answer"]
    many = qa(question=["Where?", "When?"], context=context)
    assert len(many) == 2


def test_question_answering_answers_are_whole_words(trained):
    """As in HF's pipeline (align_to_words=True), an answer never starts or ends inside a word."""
    qa = plmkit.pipeline("question-answering", model=trained / "qa" / "model")
    context = "Unbelievably, the tower stands in Paris. It was finished in 1889 by engineers."
    for question in ("Where is the tower?", "When was it finished?", "Who built it?", "What stands?"):
        r = qa(question=question, context=context)
        assert context[r["start"]:r["end"]] == r["answer"] != ""
        assert r["start"] == 0 or not context[r["start"] - 1].isalnum()
        assert r["end"] == len(context) or not context[r["end"]].isalnum()


def test_pipelines_refuse_arguments_they_would_ignore(trained):
    ner = plmkit.pipeline("token-classification", model=trained / "ner" / "model")
    default = ner("我爱北京")
    assert ner("我爱北京", aggregation_strategy=None) == ner("我爱北京", aggregation_strategy="none") == default
    with pytest.raises(ConfigError, match="unknown argument.*offset_mapping"):
        ner("我爱北京", offset_mapping=[(0, 1)])
    with pytest.raises(DataError, match="give texts; words"):
        ner({"tokens": ["我", "爱"]})


def test_pipeline_checks_the_task(trained):
    with pytest.raises(ConfigError, match="'ner' model"):
        plmkit.pipeline("text-classification", model=trained / "ner" / "model")
    with pytest.raises(ConfigError, match="'ner' model, not one for 'summarization'; its pipelines: "
                                          "token-classification, ner$"):
        plmkit.pipeline("summarization", model=trained / "ner" / "model")
    with pytest.raises(ConfigError, match="unknown pipeline task 'image-classification'"):
        plmkit.pipeline("image-classification", model=trained / "ner" / "model")
    with pytest.raises(CheckpointError, match="the weights lack .*mlm"):  # no masked-LM head to fill masks with
        plmkit.pipeline("fill-mask", model=trained / "ner" / "model")
    with pytest.raises(ConfigError, match="give model="):
        plmkit.pipeline("text-classification")
    with pytest.raises(ConfigError, match="task is a pipeline name"):
        plmkit.pipeline(5, model=trained / "ner" / "model")
    assert plmkit.pipeline(model=trained / "ner" / "model").task == "token-classification"


def test_a_causal_lm_serves_text_generation(monkeypatch):
    from plmkit import tasks
    monkeypatch.setattr(tasks, "load_for_inference", lambda model, *args, **kwargs: (None, None, tasks.get_task("sft")))
    assert plmkit.pipeline(model="chat-dir").task == "text-generation"  # the task the directory was fine-tuned for


def test_the_pipeline_names_are_listed_once():
    with pytest.raises(ConfigError, match="unknown pipeline task 'image-classification'") as err:
        plmkit.pipeline("image-classification", model="chat-dir")
    names = str(err.value).split("choose one of ")[1].split(", ")
    assert len(names) == len(set(names)) and {"text2text-generation", "summarization", "translation", "fill-mask",
                                              "feature-extraction", "text-generation",
                                              "zero-shot-classification"} <= set(names)


def test_pipeline_inputs_are_checked_where_they_enter(trained):
    """None or a number used to be a raw TypeError; a Python list was told about "JSON"."""
    clf = plmkit.pipeline("text-classification", model=trained / "cls" / "model")
    ner = plmkit.pipeline("token-classification", model=trained / "ner" / "model")
    for pipe, name in ((clf, "text-classification"), (ner, "token-classification")):
        for bad in (None, 5):
            with pytest.raises(DataError, match=rf"{name} pipeline: inputs must be a text, a dict or a list of them, got"):
                pipe(bad)
        with pytest.raises(DataError, match=r"inputs:2: expected a dict or a string, got NoneType None$"):
            pipe(["很好", None])
        with pytest.raises(DataError, match=r"inputs:1: 'text'.* is empty"):  # as training refuses it
            pipe("")
        assert pipe([]) == []
    for top_k in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match=rf"top_k must be a positive integer, or None for every label; got {top_k}"):
            clf("很好", top_k=top_k)
    with pytest.raises(ConfigError, match=r"aggregation_strategy='bogus'.*Hugging Face's are none, simple, first"):
        ner("我爱北京", aggregation_strategy="bogus")
    for batch_size in (0, -2, 1.5):
        with pytest.raises(ConfigError, match=rf"batch_size \(--batch-size\) must be"):
            plmkit.pipeline("text-classification", model=trained / "cls" / "model", batch_size=batch_size)


def test_question_answering_arguments_are_checked(trained):
    qa = plmkit.pipeline("question-answering", model=trained / "qa" / "model")
    context = "The Eiffel Tower is in Paris."
    for kwargs, message in ((dict(question=None, context=context), r"question= must be a string or a list of strings, got NoneType"),
                            (dict(question="Where?", context=5), r"context= must be a string or a list of strings, got int 5"),
                            (dict(question="Where?"), r"context= must be a string or a list of strings, got NoneType"),
                            (dict(question=["Where?", "When?"], context=[context]), r"2 questions but 1 contexts"),
                            (dict(question="Where?", context=context, align_to_words="yes"), r"align_to_words must be")):
        with pytest.raises(ConfigError, match=message):
            qa(**kwargs)
    with pytest.raises(ConfigError, match=r"give records or question= and context=, not both"):
        qa({"question": "Where?", "context": context}, question="Where?", context=context)
    with pytest.raises(DataError, match=r"inputs:1: 'question' is empty"):
        qa(question="", context=context)
    with pytest.raises(DataError, match=r"inputs:2: 'context' is empty"):
        qa(question="Where?", context=[context, ""])
    assert len(qa(question="Where?", context=[context, "It is in Rome."])) == 2  # one question, every context


def test_a_pipeline_runs_an_exported_directory_on_onnxruntime():
    from onnx_helpers import exported, task_dir
    texts = ["a wonderful film with a great cast", "dull and far too long"]
    want = plmkit.pipeline("text-classification", model=task_dir("classification"))(texts)
    got = plmkit.pipeline("text-classification", model=exported("classification"), backend="onnxruntime")(texts)
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)


# ---------------------------------------------------------------- parity with transformers' pipelines
# tiny random Hugging Face models saved to a tmp dir, run by both libraries

WORDS = ("the a cat dog sat on mat paris is in france tower eiffel where was built john smith lives london good bad "
         "film great").split()
TEXTS = ["the cat sat on the mat", "good film", "bad"]


def _close(ours, theirs, path="$"):
    """`ours` == `theirs` in structure, strings and ints; floats (and tensors) to 1e-5."""
    import torch
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and ours.shape == theirs.shape, path
        assert torch.allclose(ours, theirs, atol=1e-5), path
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), (path, ours, theirs)
        for k in theirs:
            _close(ours[k], theirs[k], f"{path}.{k}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, list) and len(ours) == len(theirs), (path, ours, theirs)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            _close(a, b, f"{path}[{k}]")
    elif isinstance(theirs, (str, int)) and not isinstance(theirs, bool):
        assert ours == theirs, (path, ours, theirs)
    else:
        assert ours == pytest.approx(float(theirs), abs=1e-5), (path, ours, theirs)


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    """make(class name, **config) -> a directory of a tiny random BERT of that class with a WordPiece tokenizer."""
    transformers = pytest.importorskip("transformers")
    import torch
    root = tmp_path_factory.mktemp("hf-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"),
             *"abcdefghijklmnopqrstuvwxyz0123456789.,?"]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(root / "vocab.txt"))

    def make(cls: str, **config):
        torch.manual_seed(0)
        model = getattr(transformers, cls)(transformers.BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=128, **config)).eval()
        with torch.no_grad():  # larger weights, so that differences would show
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.15)
        directory = root / f"{cls}-{len(list(root.iterdir()))}"
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return directory

    return make


def both(task: str, directory):
    from transformers import pipeline as hf_pipeline
    return plmkit.pipeline(task, model=directory, device="cpu"), hf_pipeline(task, model=str(directory))


@pytest.mark.parametrize("config", [dict(num_labels=1), dict(num_labels=1, problem_type="regression"),
                                    dict(num_labels=3, problem_type="multi_label_classification"),
                                    dict(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})])
def test_text_classification_scores_and_shapes_match_transformers(hf_bert, config):
    """HF's default function_to_apply (sigmoid for one label without problem_type: a cross-encoder's score),
    each function asked for, and the output shapes of a text, a pair dict and a list, with and without top_k."""
    ours, theirs = both("text-classification", hf_bert("BertForSequenceClassification", **config))
    pair = {"text": "good film", "text_pair": "bad"}
    for inputs in ("good film", pair, TEXTS, [pair, pair]):
        for kwargs in ({}, {"top_k": None}, {"top_k": 1}, {"top_k": 2}, {"function_to_apply": "softmax"},
                       {"function_to_apply": "none", "top_k": None}, {"function_to_apply": "sigmoid"}):
            _close(ours(inputs, **kwargs), theirs(inputs, **kwargs))
    if config["num_labels"] == 1 and "problem_type" not in config:
        assert 0 < ours("good film")[0]["score"] < 1  # a probability, not the raw logit
    with pytest.raises(ConfigError, match="function_to_apply must be one of sigmoid, softmax, none"):
        ours("good film", function_to_apply="tanh")


def test_token_classification_strategies_match_transformers(hf_bert):
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    ours, theirs = both("token-classification", hf_bert("BertForTokenClassification", num_labels=5,
                                                        id2label=dict(enumerate(labels))))
    texts = ["john smith lives in london near the eiffel tower", "Paris, qwerty zzz is where?"]
    for strategy in (None, "none", "simple", "first", "average", "max"):
        kwargs = {} if strategy is None else {"aggregation_strategy": strategy}
        _close(ours(texts[0], **kwargs), theirs(texts[0], **kwargs))
        _close(ours(texts, **kwargs), theirs(texts, **kwargs))
        _close(ours(texts[1], ignore_labels=[], **kwargs), theirs(texts[1], ignore_labels=[], **kwargs))
    assert set(ours(texts[0], ignore_labels=[])[0]) == {"entity", "score", "index", "word", "start", "end"}


def test_token_classification_reads_a_long_text_in_windows(hf_bert, tmp_path):
    """Beyond max_length (where HF cuts the text) each piece is read in the window where it is most central;
    a text that fits is read as HF reads it."""
    import json
    import shutil
    directory = tmp_path / "ner"
    shutil.copytree(hf_bert("BertForTokenClassification", num_labels=3), directory)
    (directory / "plmkit_task.json").write_text(json.dumps({"task": "ner", "max_length": 16}))
    ours = plmkit.pipeline("token-classification", model=directory, device="cpu")
    text = " ".join(WORDS)
    pieces = ours(text, ignore_labels=[])
    assert [p["index"] for p in pieces] == list(range(1, len(pieces) + 1)) and len(pieces) > 16
    assert all(text[p["start"]:p["end"]] == p["word"] for p in pieces)


def test_fill_mask_matches_transformers(hf_bert):
    ours, theirs = both("fill-mask", hf_bert("BertForMaskedLM"))
    one, two = "the cat [MASK] on the mat", "the [MASK] sat on the [MASK]"
    for inputs, kwargs in ((one, {}), (two, {}), ([one, two], {"top_k": 3}), ([one], {}),
                           (one, {"targets": ["sat", "dog", " mat"]}), (one, {"targets": "dog", "top_k": 4})):
        _close(ours(inputs, **kwargs), theirs(inputs, **kwargs))
    with pytest.raises(DataError, match=r"inputs:2: no mask token \(\[MASK\]\)"):
        ours([one, "the cat"])


def test_feature_extraction_matches_transformers(hf_bert):
    """The last hidden states of a masked LM's body (its directory lacks the pooler, which they never read)."""
    import torch
    ours, theirs = both("feature-extraction", hf_bert("BertForMaskedLM"))
    _close(ours("the cat sat"), theirs("the cat sat"))
    _close(ours(TEXTS), theirs(TEXTS))
    tensor = ours("the cat sat", return_tensors=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (1, 5, 32)
    _close(tensor, theirs("the cat sat", return_tensors=True))


NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


@pytest.mark.parametrize("id2label", [NLI, {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"}])
def test_zero_shot_classification_matches_transformers(hf_bert, id2label):
    """Single-label (softmax of the entailment logits across the labels) and multi_label (entailment against
    contradiction per label), for one text and several; entailment in any case and at class 0 (contradiction
    then the last class, as HF takes it)."""
    directory = hf_bert("BertForSequenceClassification", num_labels=3, id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
    ours, theirs = both("zero-shot-classification", directory)
    ours.batch_size = 2  # the (text, label) pairs of one text span batches
    for inputs in ("the cat sat on the mat", TEXTS, ["good film"]):
        for kwargs in ({}, {"multi_label": True}, {"hypothesis_template": "is it {}?"}):
            for labels in (["film", "paris", "cat"], "film, dog", ["tower"]):
                call = {"candidate_labels": labels, **kwargs}
                _close(ours(inputs, **call), theirs(inputs, **call))
    one = ours("good film", candidate_labels=["film", "paris", "cat"])
    assert one["scores"] == sorted(one["scores"], reverse=True) and sum(one["scores"]) == pytest.approx(1)
    _close(ours("good film", ["film", "paris"]), theirs("good film", ["film", "paris"]))  # the labels by position


def test_zero_shot_classification_needs_an_nli_model_and_its_arguments(hf_bert):
    ours = plmkit.pipeline("zero-shot-classification", model=hf_bert("BertForSequenceClassification", num_labels=3),
                           device="cpu")
    with pytest.raises(ConfigError, match=r"labels \(LABEL_0, LABEL_1, LABEL_2\) have no entailment class"):
        ours("good film", candidate_labels=["film"])
    nli = plmkit.pipeline("zero-shot-classification", model=hf_bert("BertForSequenceClassification", num_labels=3,
                                                                   id2label=NLI), device="cpu")
    for kwargs, message in ((dict(candidate_labels=[]), "at least one candidate label"),
                            (dict(candidate_labels=None), "candidate_labels must be"),
                            (dict(candidate_labels=["film"], hypothesis_template="no slot"), "hypothesis_template"),
                            (dict(candidate_labels=["film"], multi_label="yes"), "multi_label must be True or False")):
        with pytest.raises(ConfigError, match=message):
            nli("good film", **kwargs)
    with pytest.raises(TypeError, match="takes 2 positional argument"):
        nli("good film", ["film"], "is it {}?")
    with pytest.raises(TypeError, match="candidate_labels both by position and by name"):
        nli("good film", ["film"], candidate_labels=["film"])
    with pytest.raises(TypeError, match="takes 1 positional argument"):  # (text-classification takes none)
        plmkit.pipeline("text-classification", model=hf_bert("BertForSequenceClassification", num_labels=3,
                                                              id2label=NLI), device="cpu")("good film", 2)


def test_question_answering_top_k_ranks_distinct_context_spans(hf_bert):
    """HF's top_k (as transformers 4.x's QuestionAnsweringPipeline): the k best answers, best first; top_k=1 is the
    default answer; every span lies in its context (never the question, [CLS] or padding)."""
    qa = plmkit.pipeline("question-answering", model=hf_bert("BertForQuestionAnswering"), device="cpu")
    contexts = ["the eiffel tower is in paris, france. john smith lives in london.", "the cat sat on the mat"]
    question = "where is the eiffel tower built?"
    for context in contexts:
        default = qa(question=question, context=context)
        assert qa(question=question, context=context, top_k=1) == default
        ranked = qa(question=question, context=context, top_k=5)
        assert len(ranked) == 5 and ranked[0] == default
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
        assert len({(r["start"], r["end"]) for r in ranked}) == 5
        for r in ranked:
            assert set(r) == {"score", "start", "end", "answer"} and r["answer"] == context[r["start"]:r["end"]] != ""
    both_ranked = qa(question=question, context=contexts, top_k=3)  # the short context is padded in the batch
    assert [len(r) for r in both_ranked] == [3, 3] and both_ranked[1] == qa(question=question, context=contexts[1],
                                                                             top_k=3)
    short = qa(question=question, context=contexts[1], top_k=3, max_answer_len=1)
    assert all(" " not in r["answer"] for r in short)
    assert len(qa(question=question, context="paris", top_k=4)) == 1  # fewer spans than asked
    for kwargs, message in ((dict(top_k=0), "top_k must be a positive integer"),
                            (dict(max_answer_len=1.5), "max_answer_len must be a positive integer"),
                            (dict(handle_impossible_answer="no"), "handle_impossible_answer must be True or False")):
        with pytest.raises(ConfigError, match=message):
            qa(question=question, context=contexts[1], **kwargs)


def test_question_answering_handle_impossible_answer(trained):
    """The empty answer only where it is allowed: a SQuAD v2 model's own rule by default, never with False, and
    with True ranked among the spans by the same rule."""
    qa = plmkit.pipeline("question-answering", model=trained / "qa" / "model")
    context = "The Eiffel Tower is in Paris. It was finished in 1889."
    asked = dict(question="Where is the Eiffel Tower?", context=context)
    assert qa(**asked, top_k=1) == qa(**asked)
    assert all(r["answer"] for r in qa(**asked, top_k=4, handle_impossible_answer=False))
    ranked = qa(**asked, top_k=4, handle_impossible_answer=True)
    assert ranked[0] == qa(**asked, handle_impossible_answer=True)
    assert sum(r["answer"] == "" for r in ranked) == 1 and len(ranked) == 4  # the empty answer among the spans


CHAT_TEMPLATE = ("{% for m in messages %}{% if m.role == 'system' %}<|system|>\n{{ m.content }}\n"
                 "{% elif m.role == 'user' %}<|user|>\n{{ m.content }}\n<|assistant|>\n{% else %}{{ m.content }}"
                 "{% if not loop.last %}<|endoftext|>{% endif %}{% endif %}{% endfor %}")  # plmkit.chat's, in Jinja


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import torch
    from clm_helpers import tiny_tokenizer
    directory = tmp_path_factory.mktemp("hf-gpt2")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.15)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_text_generation_matches_transformers(hf_gpt2):
    import torch
    ours, theirs = both("text-generation", hf_gpt2)
    theirs.tokenizer.chat_template = CHAT_TEMPLATE
    greedy = {"do_sample": False, "max_new_tokens": 6}
    chat = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "how are you?"}]
    begun = [*chat, {"role": "assistant", "content": "I am"}]
    for inputs, kwargs in (("The old sailor", greedy), (["The old sailor", "Rain fell on"], greedy),
                           ("The old sailor", {**greedy, "return_full_text": False}),
                           ("The old sailor", {**greedy, "return_tensors": True}),
                           ("The old sailor", {**greedy, "num_beams": 3, "num_return_sequences": 2}),
                           (chat, greedy), (begun, greedy), ([chat, chat[1:2]], {**greedy, "return_full_text": False}),
                           ("The old sailor", {"max_new_tokens": 6, "top_k": 50})):  # sampling at HF's temperature
        torch.manual_seed(3)
        expected = theirs(inputs, **kwargs)
        torch.manual_seed(3)
        _close(ours(inputs, **kwargs), expected)
