"""sentence-transformers interchange: module files carried through plmkit's load and save, written for an
encoder saved as an embedding model, and sentence-transformers giving the same embeddings from either."""
import functools
import json
import shutil

import pytest
import torch

from plmkit import AutoTokenizer, BertConfig, BertModel, SentenceTransformerFiles, sentence_embeddings
from plmkit.errors import ConfigError

TOL = dict(atol=1e-5, rtol=1e-5)
TEXTS = ["The quick brown fox jumps over the lazy dog.", "自然语言处理很有趣。", "Mixed 中文 and English, 3.14!",
         "word " * 300]  # longer than MiniLM's max_seq_length (256, in sentence_bert_config.json)


def st_embeddings(directory, texts=TEXTS):
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(directory), device="cpu").encode(list(texts), convert_to_tensor=True)


@functools.lru_cache
def original_embeddings(minilm_dir, texts=tuple(TEXTS)):
    return st_embeddings(minilm_dir, texts)


def plmkit_copy(source, out):
    model = BertModel.from_pretrained(source)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return model


def test_minilm_resaved_by_plmkit_embeds_as_the_original(minilm_dir, tmp_path):
    model = plmkit_copy(minilm_dir, tmp_path / "copy")
    assert (model.sentence_transformers.pooling, model.sentence_transformers.normalize) == ("mean", True)
    model.save_pretrained(tmp_path / "copy")
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (minilm_dir / name).read_bytes(), name
    original = original_embeddings(minilm_dir)
    torch.testing.assert_close(st_embeddings(tmp_path / "copy"), original, **TOL)
    model.sentence_transformers = None  # what plmkit wrote before: sentence-transformers falls back to
    model.save_pretrained(tmp_path / "bare")  # mean pooling without normalisation, silently different
    shutil.copytree(tmp_path / "copy", tmp_path / "bare", dirs_exist_ok=True, ignore=lambda d, names: [
        n for n in names if n.startswith(("modules", "sentence_", "config_sentence", "1_"))])
    assert not torch.allclose(st_embeddings(tmp_path / "bare"), original, **TOL)


def test_a_directory_saved_by_the_installed_sentence_transformers_survives_plmkit(minilm_dir, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    st.SentenceTransformer(str(minilm_dir), device="cpu").save(str(tmp_path / "st"))  # its own file layout
    model = plmkit_copy(tmp_path / "st", tmp_path / "copy")
    assert (model.sentence_transformers.pooling, model.sentence_transformers.normalize) == ("mean", True)
    model.save_pretrained(tmp_path / "copy")
    torch.testing.assert_close(st_embeddings(tmp_path / "copy"), original_embeddings(minilm_dir), **TOL)


def test_plmkit_pools_like_sentence_transformers_with_the_carried_settings(minilm_dir):
    model, tok = BertModel.from_pretrained(minilm_dir), AutoTokenizer.from_pretrained(minilm_dir)
    texts = TEXTS[:3]
    batch = tok(texts, padding=True, return_tensors="pt")
    st = model.sentence_transformers
    with torch.no_grad():
        ours = sentence_embeddings(model(**batch).last_hidden_state, batch["attention_mask"], st.pooling, st.normalize)
    torch.testing.assert_close(ours, original_embeddings(minilm_dir, tuple(texts)), **TOL)


@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("cls", False), ("max", True)])
def test_tiny_random_bert_saved_as_an_embedding_model(minilm_dir, tmp_path, pooling, normalize):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=37, max_position_embeddings=64)).eval()
    model.save_pretrained(tmp_path, sentence_transformers={"pooling": pooling, "normalize": normalize,
                                                           "max_seq_length": 64})
    tok.save_pretrained(tmp_path)
    texts = TEXTS[:3]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = sentence_embeddings(model(**batch).last_hidden_state, batch["attention_mask"], pooling, normalize)
    torch.testing.assert_close(st_embeddings(tmp_path, texts), ours, **TOL)
    again = BertModel.from_pretrained(tmp_path).sentence_transformers
    assert (again.pooling, again.normalize) == (pooling, normalize)


def test_module_files_are_carried_on_the_model_not_read_back_from_the_source(tmp_path):
    source, out = tmp_path / "source", tmp_path / "out"
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(source, sentence_transformers={"pooling": "cls"})
    modules = json.loads((source / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (source / "modules.json").write_text(json.dumps(modules))
    (source / "2_Dense" / "sub").mkdir(parents=True)
    (source / "2_Dense" / "model.safetensors").write_bytes(b"\x00\x01weights")
    (source / "2_Dense" / "sub" / "config.json").write_text("{}")
    (source / "README.md").write_text("not a sentence-transformers file")
    model = BertModel.from_pretrained(source)
    expected = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    for not_ours in ("config.json", "model.safetensors", "README.md"):
        del expected[not_ours]
    assert "1_Pooling/config.json" in expected and "2_Dense/sub/config.json" in expected
    shutil.rmtree(source)
    model.save_pretrained(out)
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: got[k] for k in expected} == expected
    assert "README.md" not in got and model.sentence_transformers.pooling == "cls"


def test_bad_options_and_module_paths_are_refused(tmp_path):
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=8))
    with pytest.raises(ConfigError, match="unknown option.*'normalise'"):
        model.save_pretrained(tmp_path, sentence_transformers={"normalise": True})
    with pytest.raises(ConfigError, match="pooling='weightedmean' is not one of mean, cls, max"):
        model.save_pretrained(tmp_path, sentence_transformers={"pooling": "weightedmean"})
    assert not (tmp_path / "config.json").exists()  # refused before anything was written
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "../elsewhere"}]))
    with pytest.raises(ConfigError, match="leaves the model directory"):
        SentenceTransformerFiles.read(tmp_path)


def test_sentence_embeddings_ignore_padding_on_either_side():
    hidden = torch.randn(2, 5, 4)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    shifted = hidden.clone()
    shifted[0, 2:] = hidden[0, :3]
    for pooling in ("mean", "cls", "max"):
        a = sentence_embeddings(hidden, right, pooling)
        torch.testing.assert_close(sentence_embeddings(shifted, left, pooling), a)
        torch.testing.assert_close(sentence_embeddings(hidden[:1, :3], None, pooling), a[:1])
    assert torch.allclose(sentence_embeddings(hidden, right, normalize=True).norm(dim=-1), torch.ones(2))
