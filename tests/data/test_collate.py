"""The one padding collator: right padding for training, left padding for generation."""
import numpy as np
import pytest
import torch

from plmkit.data.collate import pad_collate, pad_sequences
from plmkit.utils.constants import IGNORE_INDEX


def test_right_padding_with_labels_and_stacked_fields():
    batch = pad_collate(0)([{"input_ids": [5, 6, 7], "token_type_ids": [0, 1, 1], "labels": [1, 2, 3],
                             "entity_positions": [0, 2], "_meta": "dropped"},
                            {"input_ids": [8], "token_type_ids": [0], "labels": [4], "entity_positions": [0, 0]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["entity_positions"].tolist() == [[0, 2], [0, 0]]
    assert "_meta" not in batch


def test_scalar_labels_and_no_token_types_for_decoders():
    batch = pad_collate(9)([{"input_ids": [1, 2], "labels": 1}, {"input_ids": [3], "labels": 0}])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].tolist() == [1, 0]


def test_left_padding():
    ids, mask = pad_sequences([[1, 2, 3], [4]], value=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    batch = pad_collate(0, side="left")([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}])
    assert batch["labels"].tolist() == [[1, 2], [IGNORE_INDEX, 3]]
    assert batch["input_ids"].dtype == torch.long


def test_bad_side():
    with pytest.raises(ValueError, match="side"):
        pad_collate(0, side="middle")


def test_records_without_labels_among_labelled_ones_get_ignored_labels():
    collate = pad_collate(0)
    per_example = collate([{"input_ids": [5, 6], "labels": 1}, {"input_ids": [7]}])  # (distillation's transfer data)
    assert per_example["labels"].tolist() == [1, IGNORE_INDEX]
    per_token = collate([{"input_ids": [7]}, {"input_ids": [5, 6, 8], "labels": [2, -100, 3]}])
    assert per_token["labels"].tolist() == [[IGNORE_INDEX] * 3, [2, IGNORE_INDEX, 3]]
    assert "labels" not in collate([{"input_ids": [5]}, {"input_ids": [6]}])  # none labelled: none made up
    with pytest.raises(ValueError, match="no ignored value"):
        collate([{"input_ids": [5, 6], "labels": [0.0, 1.0, 1.0]}, {"input_ids": [7]}])


@pytest.mark.parametrize("as_array", [np.array, torch.tensor], ids=["numpy", "tensor"])
def test_per_token_values_as_1d_integer_arrays_are_padded_like_lists(as_array):
    """Labels and document ids given as 1-D arrays (a tokenized dataset's columns) were stacked: ValueError."""
    batch = pad_collate(0)([{"input_ids": as_array([1, 2, 3]), "labels": as_array([1, 2, 3]),
                             "document_ids": as_array([4, 4, 5]), "scores": as_array([0.5, 0.5, 1.0])},
                            {"input_ids": as_array([4]), "labels": as_array([4]), "document_ids": as_array([6]),
                             "scores": as_array([1.0, 0.0, 0.0])}])
    assert batch["labels"].tolist() == [[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["document_ids"].tolist() == [[4, 4, 5], [6, 0, 0]]
    assert batch["scores"].shape == (2, 3)  # float vectors: fixed-size targets, stacked
    per_token = pad_collate(0)([{"input_ids": [7]}, {"input_ids": [5, 6, 8], "labels": as_array([2, -100, 3])}])
    assert per_token["labels"].tolist() == [[IGNORE_INDEX] * 3, [2, IGNORE_INDEX, 3]]
