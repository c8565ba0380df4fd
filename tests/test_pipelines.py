import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune_helpers as h  # noqa: E402

import plmkit  # noqa: E402
from plmkit import tasks  # noqa: E402
from plmkit.errors import ConfigError  # noqa: E402


def opts(**kw):
    return tasks.FinetuneOptions(**{**dict(epochs=1, batch_size=16, lr=1e-3, progress_bar=False, device="cpu",
                                           precision="fp32"), **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    zh = h.data_dir("zh-sentiment")
    tasks.finetune("classification", h.tiny_model_dir(), h.head_lines(zh / "train.jsonl", tmp / "zh.jsonl", 150),
                   tmp / "cls", None, opts(max_steps=4))
    ner = h.data_dir("zh-ner")
    tasks.finetune("ner", h.tiny_model_dir(), h.head_conll(ner / "train.conll", tmp / "ner.conll", 100),
                   tmp / "ner", None, opts(max_steps=4))
    tasks.finetune("qa", h.tiny_model_dir(), h.squad_file(tmp / "squad.json"), tmp / "qa", None,
                   opts(max_steps=3, max_length=48, doc_stride=16))
    return tmp


def test_text_classification_pipeline(trained):
    clf = plmkit.pipeline("text-classification", model=trained / "cls" / "model")
    out = clf(["这个手机很好用", "质量太差了", "一般"])
    assert len(out) == 3 and all(set(r) == {"label", "score"} and r["label"] in ("negative", "positive") for r in out)
    assert isinstance(clf("很好"), list)  # HF: a list of one dict for one text
    both = clf("很好", top_k=None)[0]
    assert len(both) == 2 and both[0]["score"] >= both[1]["score"]


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


def test_pipeline_checks_the_task(trained):
    with pytest.raises(ConfigError, match="'ner' model"):
        plmkit.pipeline("text-classification", model=trained / "ner" / "model")
    with pytest.raises(ConfigError, match="unknown pipeline task"):
        plmkit.pipeline("summarization", model=trained / "ner" / "model")
