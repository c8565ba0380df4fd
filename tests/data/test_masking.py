"""mask_tokens: the expected masked count is n * rate with whole-word masking too, whole words kept whole."""
import pytest
import torch

from plmkit.data.masking import mask_tokens
from plmkit.utils.constants import IGNORE_INDEX

CONTINUATION = torch.arange(100) >= 50  # (V,): ids >= 50 are "##" continuations
MASK_ID = 0


def word_rows(word_lengths: list[int], rows: int) -> torch.Tensor:
    """(rows, n) ids: word w is a start id 1 + w % 40 followed by its continuations 50 + w % 40."""
    row = []
    for w, length in enumerate(word_lengths):
        row += [1 + w % 40] + [50 + w % 40] * (length - 1)
    return torch.tensor([row] * rows)


@pytest.mark.parametrize("word_lengths", [[1] * 10, [2] * 10, [2] * 30, [3] * 20, [1, 4, 2, 1, 3, 1, 2, 5, 1, 1]])
def test_whole_word_masking_masks_rate_of_the_tokens_in_expectation(word_lengths):
    """2-token words and an odd budget (20 tokens at 15%: 3) used to lose a masked token every time."""
    ids = word_rows(word_lengths, 4000)
    eligible = torch.ones_like(ids, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(ids, eligible, 0.15, MASK_ID, torch.arange(5, 45), CONTINUATION, g)
    chosen = labels != IGNORE_INDEX
    expected = 0.15 * ids.shape[1]
    assert abs(chosen.sum(1).float().mean().item() - expected) < 0.03 * expected + 0.05
    starts = torch.tensor([0] + torch.tensor(word_lengths).cumsum(0).tolist())
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):  # each word wholly masked or not at all
        assert (chosen[:, a:b].all(1) | ~chosen[:, a:b].any(1)).all()
    replaced = masked[chosen]
    assert abs((replaced == MASK_ID).float().mean().item() - 0.8) < 0.03  # the 80/10/10 rule
    assert abs((replaced == ids[chosen]).float().mean().item() - 0.1) < 0.03


def test_token_masking_masks_floor_or_ceil_of_the_budget():
    ids = word_rows([1] * 20, 2000)
    g = torch.Generator().manual_seed(1)
    _, labels = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), 0.17, MASK_ID, torch.arange(5, 45), None, g)
    counts = (labels != IGNORE_INDEX).sum(1)  # 20 * 0.17 = 3.4: 3 or 4, 4 in 40% of the rows
    assert set(counts.tolist()) == {3, 4} and abs(counts.float().mean().item() - 3.4) < 0.05
