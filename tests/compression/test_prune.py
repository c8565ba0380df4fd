"""plmkit.compression.prune and plmkit prune: importance, physical removal equal to masking, saving and
loading, Hugging Face's view of the result, and the command end to end."""
import json
import sys
from pathlib import Path

import pytest
import torch

import finetune_helpers as h
from plmkit.cli import main
from plmkit.compression import prune as P
from plmkit.errors import ConfigError
from plmkit.models.bert import BertConfig, BertForSequenceClassification


def tiny_classifier(seed: int = 0, **config) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    c = BertConfig(**{**dict(vocab_size=3000, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, id2label={0: "negative", 1: "positive"}), **config})
    return BertForSequenceClassification(c).eval()


def padded_batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 3000, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding: the unpadded path
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def scores_of(model) -> P.Importance:
    batches = [padded_batch(s) for s in range(3)]
    return P.importance(model, batches)


def test_a_pruned_model_equals_the_masked_original():
    model = tiny_classifier()
    scores = scores_of(model)
    head_masks, ffn_masks = P.masks_of(model, scores, 0.3, 0.2)
    batch = {k: v for k, v in padded_batch(7).items() if k != "labels"}
    with torch.no_grad(), P.masked(model, head_masks, ffn_masks):
        expected = model(**batch).logits
    pruned = P.prune(model, scores, heads=0.3, ffn=0.2)
    assert pruned.heads_removed_now == round(0.3 * 12) and pruned.neurons_removed_now == round(0.2 * 192)
    assert sum(pruned.heads) == 12 - 4 and sum(pruned.ffn_sizes) == 192 - 38 and min(pruned.heads) >= 1
    for block, n, width in zip(P.blocks(model), pruned.heads, pruned.ffn_sizes):  # smaller matrices, not masks
        assert block.attn.q.weight.shape == (n * 8, 32) and block.attn.out.weight.shape == (32, n * 8)
        assert block.mlp.fc_in.weight.shape == (width, 32) and block.mlp.fc_out.weight.shape == (32, width)
    with torch.no_grad():
        got = model(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(expected, tiny_classifier()(**batch).logits)  # the masks did change the outputs


def test_masks_are_on_the_model_s_device():
    """(No GPU here: the meta device stands for one.) A CPU mask would not scale a CUDA model's activations."""
    model = tiny_classifier()
    scores = scores_of(model)
    on_cpu = P.masks_of(model, scores, 0.3, 0.2)
    elsewhere = P.masks_of(model.to("meta"), scores, 0.3, 0.2)
    for cpu, meta in zip(on_cpu, elsewhere):
        assert [m.device.type for m in meta] == ["meta"] * len(cpu)
        assert [m.shape for m in meta] == [m.shape for m in cpu]


def test_importance_is_normalised_per_layer_and_a_dead_head_goes_first():
    model = tiny_classifier()
    with torch.no_grad():  # head 2 of layer 1 and neuron 5 of layer 0 no longer reach the output
        model.bert.layers[1].attn.out.weight[:, 16:24] = 0
        model.bert.layers[0].mlp.fc_out.weight[:, 5] = 0
    scores = scores_of(model)
    for layer in scores.heads + scores.neurons:
        assert float(layer.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(scores.heads[1][2]) == 0.0 and float(scores.neurons[0][5]) == 0.0
    assert P.lowest(scores.heads, 1 / 12) == [[], [2], []]
    assert P.lowest([torch.tensor([0.1, 0.2]), torch.tensor([0.01, 0.5])], 0.99) == [[0], [0]]  # each keeps its best
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        P.lowest(scores.heads, 1.0)


def test_widths_kept_a_multiple_of_n_drop_each_layers_lowest():
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(64, generator=g), torch.rand(64, generator=g) + 1.0, torch.rand(10, generator=g)]
    plain = P.lowest(scores, 0.2)  # 28 of 138: all from the low layers
    assert sum(map(len, plain)) == 28 and plain[1] == []
    cut = P.lowest(scores, 0.2, multiple=16)
    kept = 64 - len(plain[0])
    assert 64 - len(cut[0]) == round(kept / 16) * 16 != kept and 64 - len(cut[1]) == 64  # the nearest multiple
    assert cut[0] == sorted(scores[0].argsort()[:len(cut[0])].tolist())  # that layer's lowest
    assert cut[2] == plain[2]  # (10 units: not a multiple of 16, as chosen)
    model = tiny_classifier()
    imp = scores_of(model)
    P.prune(model, imp, ffn=0.2, ffn_multiple=16)
    assert all(b.mlp.fc_in.out_features % 16 == 0 for b in P.blocks(model))


def test_pruned_model_saves_loads_and_prunes_again(tmp_path):
    model = tiny_classifier()
    P.prune(model, scores_of(model), heads=0.25, ffn=0.25)
    first = model.config.removed_heads()
    P.prune(model, scores_of(model), heads=0.25, ffn=0.0)  # numbers stay those of the unpruned model
    removed = model.config.removed_heads()
    assert all(set(first.get(i, [])) <= set(v) for i, v in removed.items())
    assert sum(len(v) for v in removed.values()) == 3 + round(0.25 * 9)
    assert [4 - len(removed.get(i, [])) for i in range(3)] == [b.attn.n_heads for b in P.blocks(model)]
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {int(k): v for k, v in saved["pruned_heads"].items()} == removed
    assert saved["intermediate_sizes"] == [b.mlp.fc_in.out_features for b in P.blocks(model)]
    loaded = BertForSequenceClassification.from_pretrained(tmp_path)
    batch = {k: v for k, v in padded_batch().items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    assert loaded.num_parameters() == model.num_parameters() < tiny_classifier().num_parameters()


def test_hugging_face_transformers_does_not_load_a_pruned_bert(tmp_path):
    """transformers 5.x dropped head pruning (config.pruned_heads is no longer rebuilt) and has no per-layer
    feed-forward width: it refuses the smaller matrices. plmkit loads them (above)."""
    transformers = pytest.importorskip("transformers")
    model = tiny_classifier()
    P.prune(model, scores_of(model), heads=0.25, ffn=0.25)
    model.save_pretrained(tmp_path)
    with pytest.raises(Exception, match="ignore_mismatched_sizes"):  # (its load report: size mismatch)
        transformers.BertForSequenceClassification.from_pretrained(tmp_path)


def test_what_cannot_be_pruned_is_refused_by_name():
    from plmkit.nn.lora import apply_lora
    model = tiny_classifier()
    apply_lora(model, ("q", "v"), 2, 4.0, 0.0)
    with pytest.raises(ConfigError, match="LoRA adapters"):
        P.check_prunable(model)
    from plmkit.compression.quantize import quantize_model
    with pytest.raises(ConfigError, match=r"BertForSequenceClassification is quantized \(int8 layers.*\): prune the "
                                          "fp32 model it was quantized from, then quantize the result"):
        P.check_prunable(quantize_model(tiny_classifier()))
    with pytest.raises(ConfigError, match="keeping at least one head"):
        BertConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=8, pruned_heads={"0": [0, 1]})
    with pytest.raises(ConfigError, match="one positive width for each of the 2 layers"):
        BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=8, intermediate_sizes=[4])
    from plmkit.models.bart import BartConfig
    with pytest.raises(ConfigError, match="cannot prune bart models"):
        BartConfig.from_preset("bart-tiny").pruned({}, [])
    from plmkit.models.llama import LlamaConfig
    with pytest.raises(ConfigError, match="whole groups of 2 query heads"):  # (heads 0, 1 share a key/value head)
        LlamaConfig(**LLAMA, pruned_heads={"1": [1, 2]})
    LlamaConfig(**LLAMA, pruned_heads={"1": [2, 3]})
    attn = tiny_decoder("llama").model.layers[0].attn
    with pytest.raises(ConfigError, match="whole groups of 2"):
        P.remove_heads(attn, [0])


def test_plmkit_prune_end_to_end(tmp_path, capsys):
    import compression_helpers as ch
    model_dir, test = ch.sentiment_dir()
    train = h.head_lines(h.data_dir("en-sentiment") / "movie_reviews.train.jsonl", tmp_path / "train.jsonl", 64)
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(model_dir), "--out", str(out), "--data", str(train), "--eval", str(test),
                 "--heads", "0.5", "--ffn", "0.25", "--recover-steps", "2", "--batch-size", "16", "--device", "cpu",
                 "--no-progress", "--batch-sizes", "1,4"]) == 0
    printed = capsys.readouterr().out
    assert "pruned: 2 heads left ([1, 1] per layer)" in printed and "compression_report.json" in printed
    record = json.loads((out / "prune.json").read_text())
    assert set(record["metrics"]) == {"before", "pruned", "recovered"} and record["heads_per_layer"] == [1, 1]
    assert (out / "recovery" / "metrics.jsonl").is_file() and (out / "plmkit_task.json").is_file()
    report = json.loads((out / "compression_report.json").read_text())
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert report["after"]["how"]["pruned_heads"] == record["removed_heads"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(test), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(record["metrics"]["recovered"]["accuracy"])
    assert main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "x"), "--data", str(train)]) != 0
    assert "nothing to prune: give --heads F and/or --ffn F" in capsys.readouterr().err


def test_the_output_directory_carries_the_model_folders(tmp_path):
    from plmkit.recipes.prune import RESULT_FILE, _write, refuse_foreign_out
    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)  # a sentence-transformers model's pooling folder
    (model / "1_Pooling" / "config.json").write_text("{}")
    (model / "config.json").write_text("{}")
    record = {"heads": 0.3, "removed_heads": {"0": [1]}, "heads_per_layer": [3, 4], "ffn_sizes": [64, 64]}
    _write(tmp_path / "out", model, None, record)
    assert (tmp_path / "out" / "1_Pooling" / "config.json").is_file()
    assert json.loads((tmp_path / "out" / RESULT_FILE).read_text()) == record
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refuse_foreign_out(tmp_path / "out")  # an earlier prune's output is replaced
    with pytest.raises(ConfigError, match="holds files that plmkit prune did not write"):
        refuse_foreign_out(tmp_path / "other")


def test_a_copy_carrying_an_earlier_prune_s_record_is_no_output_of_prune(tmp_path):
    """An int8 copy or an ONNX export of a pruned model made before the copies left the records out: prune.json
    beside weights that prune did not write. `plmkit prune --out` there would replace them without --overwrite."""
    import shutil
    from onnx_helpers import exported
    from plmkit.compression.quantize import quantize_dir
    from plmkit.recipes.prune import RESULT_FILE, pruned_here, refuse_foreign_out
    record = json.dumps({"removed_heads": {}, "heads_per_layer": [4, 4], "ffn_sizes": [64, 64]})
    model = tiny_classifier_dir(tmp_path)
    int8 = quantize_dir(model, tmp_path / "int8")
    onnx_copy = shutil.copytree(exported("classification"), tmp_path / "onnx")
    for copy in (int8, onnx_copy):
        (copy / RESULT_FILE).write_text(record)
        assert not pruned_here(copy)
        with pytest.raises(ConfigError, match=f"--out {copy} holds files that plmkit prune did not write"):
            refuse_foreign_out(copy)
    (model / RESULT_FILE).write_text(record)
    assert pruned_here(model)  # prune's own output: an fp32 model and its record
    (model / RESULT_FILE).write_text(json.dumps({"notes": "mine"}))
    assert not pruned_here(model)  # a prune.json that prune did not write


def tiny_classifier_dir(tmp_path):
    directory = tmp_path / "fp32"
    tiny_classifier().save_pretrained(directory)
    return directory


LLAMA = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64, max_position_embeddings=64)


def tiny_decoder(family: str, seed: int = 0):
    """A random 3-layer GPT-2 (4 heads) or Llama (4 query heads in 2 key/value groups), 32 wide."""
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=3, n_head=4, resid_pdrop=0.0,
                                          embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    return LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()


def decoder_batch(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_pruned_decoder_equals_the_masked_original_saves_loads_and_generates(family, tmp_path):
    """GPT-2 loses heads one by one; Llama (grouped-query attention) whole key/value groups, with their query
    heads. The layers then differ in head counts, which the KV cache follows."""
    model = tiny_decoder(family)
    scores = P.importance(model, [decoder_batch(s) for s in range(3)])
    head_masks, ffn_masks = P.masks_of(model, scores, 0.3, 0.2)
    batch = {k: v for k, v in decoder_batch(7).items() if k != "labels"}
    with torch.no_grad(), P.masked(model, head_masks, ffn_masks):
        expected = model(**batch).logits
    pruned = P.prune(model, scores, heads=0.3, ffn=0.2)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, expected, atol=1e-5, rtol=1e-5)
        assert not torch.equal(expected, tiny_decoder(family)(**batch).logits)  # (the masks did change the outputs)
    layers = P.blocks(model)
    if family == "llama":  # 6 groups of 2: 2 go, every layer keeps groups of 2 query heads
        assert pruned.heads_removed_now == 4 and all(b.attn.n_heads == 2 * b.attn.n_kv_heads for b in layers)
        assert {b.attn.k.weight.shape[0] for b in layers} == {8, 16}  # (1 or 2 key/value heads of 8)
    else:
        assert pruned.heads_removed_now == round(0.3 * 12) and len({b.attn.n_heads for b in layers}) > 1
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {int(k): v for k, v in saved["pruned_heads"].items()} == model.config.removed_heads()
    assert saved["intermediate_sizes"] == pruned.ffn_sizes != [64] * 3
    loaded = type(model).from_pretrained(tmp_path).eval()
    prompt = batch["input_ids"][:1, :4]
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
        generated = loaded.generate(prompt, max_new_tokens=6, do_sample=False)  # (with the KV cache)
        ids = prompt
        for _ in range(6):  # greedy without a cache: the whole sequence each step
            ids = torch.cat([ids, loaded(ids).logits[:, -1:].argmax(-1)], 1)
    assert generated.tolist() == ids.tolist()
    assert loaded.num_parameters() == model.num_parameters() < tiny_decoder(family).num_parameters()


def test_plmkit_prune_a_chat_model(tmp_path, capsys):
    """The command on a GPT-2 fine-tuned for sft (scored by its loss on prompt/response pairs); plmkit
    generate then runs the pruned directory."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
    from clm_helpers import PAIRS
    from clm_model import save_tiny_model
    from plmkit.tasks.sft import SFTTask
    model_dir = save_tiny_model(tmp_path / "chat")
    SFTTask.of(max_length=48).save(model_dir)
    pairs = h.write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(model_dir), "--out", str(out), "--data", str(pairs), "--eval", str(pairs),
                 "--heads", "0.25", "--ffn", "0.5", "--ffn-multiple", "1", "--batch-size", "3", "--device", "cpu",
                 "--no-progress", "--no-report"]) == 0
    assert "pruned: 3 heads left" in capsys.readouterr().out  # (gpt2-tiny: 2 layers of 2 heads)
    record = json.loads((out / "prune.json").read_text())
    assert set(record["metrics"]["pruned"]) >= {"perplexity"} and sum(record["ffn_sizes"]) == 512
    assert main(["generate", "--model", str(out), "--prompt", "hello", "--max-new-tokens", "4", "--device", "cpu"]) == 0
