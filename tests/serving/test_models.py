"""What a model directory is served as, and the variants issue 18 makes: an int8 directory (plmkit quantize)
serves through the same loader, answering as `plmkit predict` and `generate` answer on it; ONNX exports
(plmkit export) of task models, decoders and encoder-decoders answer on onnxruntime as the PyTorch directory."""
import concurrent.futures
import shutil
from pathlib import Path

import torch

import serve_helpers as sh
from plmkit import tasks
from plmkit.chat import encode_text
from plmkit.cli import main
from plmkit.serving import ServeSettings, create_app
from plmkit.serving.models import load_served_model


def test_kinds_and_routes(tmp_path, minilm_dir, minilm_classifier):
    gpt = load_served_model("gpt", sh.decoder_dir(tmp_path), "cpu")
    cls = load_served_model("cls", minilm_classifier, "cpu")
    emb = load_served_model("emb", minilm_dir, "cpu")
    assert (gpt.kind, cls.kind, emb.kind) == ("decoder", "task", "embedding")
    assert gpt.endpoints == ["/v1/completions", "/v1/chat/completions"]
    assert cls.endpoints == ["/v1/classify", "/v1/attention"]
    assert emb.endpoints == ["/v1/embeddings", "/v1/attention"]
    assert (emb.pooling, emb.normalize, emb.max_input_tokens) == ("mean", True, 256)  # its sentence-transformers files


def test_quantized_directories_are_served(tmp_path, minilm_classifier):
    sources = {"cls": minilm_classifier, "gpt": sh.decoder_dir(tmp_path)}
    int8 = {}
    for name, source in sources.items():
        int8[name] = str(tmp_path / f"{name}-int8")
        assert main(["quantize", "--model", str(source), "--out", int8[name], "--no-report", "--quiet"]) == 0
    reference = load_served_model("ref", int8["gpt"], "cpu")
    ids = encode_text(reference.tokenizer, "Rain fell")
    expected = reference.tokenizer.decode(reference.model.generate(torch.tensor([ids]), max_new_tokens=8,
                                                                   do_sample=False)[0, len(ids):].tolist())
    records = ["A moving, beautifully acted film.", "Dull and far too long."]
    with sh.running(create_app(int8, ServeSettings(device="cpu"))) as url:
        status, body = sh.post(url, "/v1/classify", {"model": "cls", "input": records})
        assert status == 200 and body["data"] == tasks.predict_dir(int8["cls"], records, device="cpu")
        status, body = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "Rain fell", "max_tokens": 8,
                                                        "temperature": 0})
        assert status == 200 and body["choices"][0]["text"] == expected


def test_onnx_exports_are_served(tmp_path):
    """An exported task model answers on onnxruntime what `predict --backend onnxruntime` answers; the
    exported directory of a model without a task is refused by name."""
    import onnx_helpers
    import pytest

    from plmkit.errors import ConfigError

    cls, ner = onnx_helpers.exported("classification"), onnx_helpers.exported("ner")
    served = load_served_model("cls", cls, "cpu")
    assert (served.backend, served.kind, served.endpoints) == ("onnxruntime", "task", ["/v1/classify"])
    records = onnx_helpers.TEXTS[:4]
    with sh.running(create_app({"cls": str(cls), "ner": str(ner)}, ServeSettings(device="cpu"))) as url:
        for name, route, model_dir in (("cls", "/v1/classify", cls), ("ner", "/v1/ner", ner)):
            status, body = sh.post(url, route, {"model": name, "input": records})
            assert status == 200
            assert body["data"] == tasks.predict_dir(model_dir, records, device="cpu", backend="onnxruntime")
    bare = Path(shutil.copytree(cls, tmp_path / "bare"))  # (the export is shared by other tests: a copy)
    (bare / "plmkit_task.json").unlink()
    with pytest.raises(ConfigError, match="without plmkit_task.json"):
        load_served_model("cls", bare, "cpu")


def test_onnx_decoders_and_encoder_decoders_answer_as_the_pytorch_directory(tmp_path):
    """An exported decoder decodes in the server's continuous batching (concurrent greedy requests join
    one running batch) and an exported translation / summarization model answers its route and
    completions (finished rows leaving its batch): the same answers as the PyTorch directories served."""
    import onnx_helpers
    torch_dirs = {"gpt": sh.decoder_dir(tmp_path), "fr-en": onnx_helpers.task_dir("translation"),
                  "sum": onnx_helpers.task_dir("summarization")}
    exports = {"gpt": tmp_path / "gpt-onnx", "fr-en": onnx_helpers.exported("translation"),
               "sum": onnx_helpers.exported("summarization")}
    assert main(["export", "--model", str(torch_dirs["gpt"]), "--out", str(exports["gpt"]), "--quiet"]) == 0
    served = load_served_model("gpt", exports["gpt"], "cpu")
    assert (served.backend, served.kind, served.endpoints) == ("onnxruntime", "decoder",
                                                               ["/v1/completions", "/v1/chat/completions"])
    assert load_served_model("fr-en", exports["fr-en"], "cpu").endpoints == ["/v1/translate", "/v1/completions"]
    requests = [("/v1/completions", {"model": "gpt", "prompt": prompt, "max_tokens": 8, "temperature": 0})
                for prompt in ("Rain fell", "The old man and the", "A")]
    requests.append(("/v1/completions", {"model": "gpt", "prompt": "Rain fell", "echo": True, "logprobs": 1,
                                         "max_tokens": 2, "temperature": 0}))  # (the prompt scored by the graph)
    requests += [("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": "hello"}],
                                           "max_tokens": 6, "temperature": 0}),
                 ("/v1/translate", {"model": "fr-en", "input": onnx_helpers.TEXTS[:3]}),
                 ("/v1/summarize", {"model": "sum", "input": onnx_helpers.TEXTS[3:5]}),
                 ("/v1/completions", {"model": "fr-en", "prompt": onnx_helpers.TEXTS[5:7], "max_tokens": 6,
                                      "temperature": 0})]  # (an encoder-decoder's: the prompts are sources)

    def answers(models: dict) -> list:
        with sh.running(create_app({k: str(v) for k, v in models.items()}, ServeSettings(device="cpu"))) as url, \
                concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            replies = list(pool.map(lambda request: sh.post(url, *request), requests))
        assert all(status == 200 for status, _ in replies), replies
        return [body.get("data") or [(c.get("text") or c["message"]["content"], c["finish_reason"])
                                     for c in body["choices"]] for _, body in replies]

    want = answers(torch_dirs)
    assert any(text for (text, _), in want[:3])  # (random weights, but text: the comparison says something)
    assert answers(exports) == want
