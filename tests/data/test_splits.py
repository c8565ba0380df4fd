"""plmkit.data.splits: held-out documents, whole and seeded."""
import numpy as np
import pytest

from plmkit.data.splits import split_documents
from plmkit.errors import DataError


def test_whole_documents_seeded_sorted_and_disjoint():
    train, held = split_documents(50, 0.1, seed=3)
    assert len(held) == 5 and len(train) == 45
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(50))
    assert list(train) == sorted(train) and list(held) == sorted(held)
    again = split_documents(50, 0.1, seed=3)
    assert np.array_equal(again[1], held) and not np.array_equal(split_documents(50, 0.1, seed=4)[1], held)


def test_minimum_sizes_and_no_held_out_split():
    assert len(split_documents(10, 0.01, seed=0, min_eval=2)[1]) == 2  # ceil(0.1) = 1, raised to min_eval
    train, held = split_documents(10, 0.0, seed=0)
    assert len(held) == 0 and len(train) == 10
    with pytest.raises(DataError, match="the corpus has 3 document"):
        split_documents(3, 0.5, seed=0, min_eval=2, min_train=2)
