import pytest

import finetune_helpers as h
import plmkit
from plmkit.errors import ConfigError
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
    for entity in ner(text):
        assert set(entity) == {"entity_group", "score", "word", "start", "end"}
        assert text[entity["start"]:entity["end"]] == entity["word"]
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
    assert ner("我爱北京", aggregation_strategy="first") == ner("我爱北京")
    with pytest.raises(ConfigError, match="per-piece output is not offered"):
        ner("我爱北京", aggregation_strategy="none")
    with pytest.raises(ConfigError, match="unknown argument.*ignore_labels"):
        ner("我爱北京", ignore_labels=["O"])


def test_pipeline_checks_the_task(trained):
    with pytest.raises(ConfigError, match="'ner' model"):
        plmkit.pipeline("text-classification", model=trained / "ner" / "model")
    with pytest.raises(ConfigError, match="'ner' model, not one for 'summarization'; its pipelines: "
                                          "token-classification, ner$"):
        plmkit.pipeline("summarization", model=trained / "ner" / "model")
    with pytest.raises(ConfigError, match="unknown pipeline task 'fill-mask'"):
        plmkit.pipeline("fill-mask", model=trained / "ner" / "model")
    with pytest.raises(ConfigError, match="give model="):
        plmkit.pipeline("text-classification")
    with pytest.raises(ConfigError, match="task is a pipeline name"):
        plmkit.pipeline(5, model=trained / "ner" / "model")
    assert plmkit.pipeline(model=trained / "ner" / "model").task == "token-classification"


def test_a_model_no_pipeline_takes_is_named_with_what_to_use_instead(monkeypatch):
    from plmkit import tasks
    monkeypatch.setattr(tasks, "load_for_inference", lambda model, *args, **kwargs: (None, None, tasks.get_task("sft")))
    with pytest.raises(ConfigError) as err:
        plmkit.pipeline(model="chat-dir")  # the task the directory was fine-tuned for: sft, which has no pipeline
    assert str(err.value) == ("chat-dir is a 'sft' model, which no pipeline takes (they take classification, ner, "
                              "relation, qa, translation, summarization models); a causal LM generates text with "
                              "plmkit generate or plmkit chat")


def test_the_pipeline_names_are_listed_once():
    with pytest.raises(ConfigError, match="unknown pipeline task 'text-generation'") as err:
        plmkit.pipeline("text-generation", model="chat-dir")
    names = str(err.value).split("choose one of ")[1].split(", ")
    assert len(names) == len(set(names)) and {"text2text-generation", "summarization", "translation"} <= set(names)


def test_pipeline_inputs_are_checked_where_they_enter(trained):
    """None or a number used to be a raw TypeError; a Python list was told about "JSON"."""
    from plmkit.errors import DataError
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
    from plmkit.errors import DataError
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
