"""Pretraining data in one import: token cache (`shards`), held-out split (`splits`), examples (`nsp`),
masking (`masking`).

    shards = build_token_shards(paths, tokenizer, cache_root)      # tokenize once, memory-mapped
    groups = group_documents(shards, min_tokens=128)               # short paragraphs of a file merged
    train_ids, eval_ids = split_documents(len(groups), 0.02, seed)
    rows = nsp_instances(shards, train_docs, seq_len=128, seed=0)   # or packed_instances (MLM only)
    dataset = PretrainingDataset(shards, rows, tokenizer.cls_token_id, tokenizer.sep_token_id)
    collate = PretrainingCollator(tokenizer, mask_rate=0.15, whole_word_mask=False, nsp=True)
"""
from plmkit.data.masking import PretrainingCollator, continuation_table, mask_tokens
from plmkit.data.nsp import (IS_NEXT, NO_PAIR, RANDOM_NEXT, PretrainingDataset, group_documents, nsp_instances,
                             packed_instances, truncate_pair)
from plmkit.data.shards import TokenShards, build_token_shards
from plmkit.data.splits import split_documents

__all__ = ["PretrainingCollator", "continuation_table", "mask_tokens", "IS_NEXT", "NO_PAIR", "RANDOM_NEXT",
           "PretrainingDataset", "group_documents", "nsp_instances", "packed_instances", "split_documents",
           "truncate_pair", "TokenShards", "build_token_shards"]
