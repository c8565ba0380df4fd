import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clm_helpers import PARAGRAPHS, packed_blocks, tiny_tokenizer  # noqa: E402
from plmkit.data import clm as clm_module
from plmkit.data.clm import build_document_shards, collate_blocks, document_spans
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
from plmkit.nn.masks import positions_from_documents


def test_packing_lays_documents_end_to_end():
    blocks = packed_blocks([3, 5, 2], seq_len=4)  # stream: 10 11 0 | 20 21 22 23 0 | 30 0
    assert len(blocks) == 2  # 10 tokens -> 2 full blocks, remainder dropped
    assert blocks[0]["input_ids"].tolist() == [10, 11, 0, 20]
    assert blocks[0]["document_ids"].tolist() == [0, 0, 0, 1]
    assert blocks[1]["input_ids"].tolist() == [21, 22, 23, 0]
    assert blocks[1]["document_ids"].tolist() == [0, 0, 0, 0]
    tail = packed_blocks([3, 5, 2], seq_len=4, keep_partial=True)
    assert len(tail) == 3 and tail[2]["input_ids"].tolist() == [30, 0]


def test_collate_labels_skip_document_starts_and_padding():
    b = collate_blocks([{"input_ids": np.array([5, 6, 0, 7, 8]), "document_ids": np.array([0, 0, 0, 1, 1])},
                        {"input_ids": np.array([9, 0]), "document_ids": np.array([0, 0])}], pad_token_id=99)
    assert b["labels"].tolist() == [[5, 6, 0, -100, 8], [9, 0, -100, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert b["input_ids"][1].tolist() == [9, 0, 99, 99, 99]


def test_positions_restart_at_each_document():
    docs = torch.tensor([[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 0, 0]])
    assert positions_from_documents(docs).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


def _models():
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=64, n_positions=32))
    llama = LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=64, max_position_embeddings=32))
    return gpt.eval(), llama.eval()


@pytest.mark.parametrize("which", [0, 1], ids=["gpt2", "llama"])
def test_packed_documents_do_not_leak(which):
    model = _models()[which]
    g = torch.Generator().manual_seed(1)
    doc1, doc2, doc3 = (torch.randint(1, 64, (n,), generator=g) for n in (7, 9, 5))
    doc_ids = torch.tensor([0] * 7 + [1] * 9 + [2] * 5)[None]
    packed = torch.cat([doc1, doc2, doc3])[None]
    out = model(packed, document_ids=doc_ids).logits
    # each document inside the block gives exactly its stand-alone logits (positions restart at 0)
    for doc, sl in ((doc1, slice(0, 7)), (doc2, slice(7, 16)), (doc3, slice(16, 21))):
        alone = model(doc[None]).logits
        torch.testing.assert_close(out[:, sl], alone, atol=1e-5, rtol=1e-5)
    # changing document 1's tokens never changes document 2's logits
    other = packed.clone()
    other[0, :7] = torch.randint(1, 64, (7,), generator=g)
    out2 = model(other, document_ids=doc_ids).logits
    assert not torch.allclose(out2[:, :7], out[:, :7])
    torch.testing.assert_close(out2[:, 7:], out[:, 7:], atol=0, rtol=0)


def test_without_document_ids_the_model_is_unchanged():
    gpt, _ = _models()
    ids = torch.randint(1, 64, (2, 10))
    single = gpt(ids, document_ids=torch.zeros(2, 10, dtype=torch.long)).logits
    torch.testing.assert_close(single, gpt(ids).logits, atol=0, rtol=0)


def test_document_shards_keep_whitespace_and_end_with_eos(tmp_path, caplog):
    tok = tiny_tokenizer()
    (tmp_path / "c.txt").write_text("\n\n".join(PARAGRAPHS[:3]) + "\n")
    with caplog.at_level("INFO", logger="plmkit"):
        shards = build_document_shards(tmp_path / "c.txt", tok, tmp_path / "cache")
    assert shards.num_documents == 3 and "tokenized" in caplog.records[-1].getMessage()
    spans = document_spans(shards)
    for (a, b), text in zip(spans, PARAGRAPHS[:3]):
        ids = shards.tokens[a:b].tolist()
        assert ids[-1] == tok.eos_token_id and tok.decode(ids[:-1]) == text  # line breaks survive
    again = build_document_shards(tmp_path / "c.txt", tok, tmp_path / "cache")
    assert again.reused and again.directory == shards.directory


def test_progress_bar_counts_compressed_bytes_of_a_gz_corpus(tmp_path, progress_bars):
    path = tmp_path / "c.txt.gz"
    path.write_bytes(gzip.compress(("\n\n".join(PARAGRAPHS) + "\n\n").encode() * 20))
    bars = progress_bars(clm_module)
    build_document_shards(path, tiny_tokenizer(), tmp_path / "cache", progress=False)
    [bar] = bars
    assert bar.total == path.stat().st_size == sum(bar.updates)
