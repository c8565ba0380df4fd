import pytest
import torch

from plmkit.data.loader import BatchLoader
from plmkit.errors import CheckpointError, ConfigError


def ids_collate(examples):
    return {"ids": torch.tensor(examples)}


def flat(batches):
    return [b["ids"].tolist() for b in batches]


def test_len_counts_batches_per_epoch():
    assert len(BatchLoader(list(range(10)), 3, ids_collate)) == 4
    assert len(BatchLoader(list(range(10)), 3, ids_collate, drop_last=True)) == 3
    with pytest.raises(ConfigError, match="batch_size"):
        BatchLoader(list(range(10)), 0, ids_collate)


def test_epochs_are_permutations_deterministic_from_seed_and_epoch():
    loader = BatchLoader(list(range(20)), 4, ids_collate, seed=3)
    epoch0, epoch1 = flat(loader), flat(loader)
    assert sorted(sum(epoch0, [])) == list(range(20)) == sorted(sum(epoch1, []))
    assert epoch0 != epoch1
    again = BatchLoader(list(range(20)), 4, ids_collate, seed=3)
    assert flat(again) == epoch0 and flat(again) == epoch1
    assert flat(BatchLoader(list(range(20)), 4, ids_collate, seed=4)) != epoch0
    assert flat(BatchLoader(list(range(7)), 3, ids_collate, shuffle=False)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_resume_mid_epoch_gives_the_same_stream():
    def stream(loader, n):
        it = loader.forever()
        return [next(it)["ids"].tolist() for _ in range(n)]

    straight = stream(BatchLoader(list(range(22)), 4, ids_collate, seed=1), 15)
    first = BatchLoader(list(range(22)), 4, ids_collate, seed=1)
    head = stream(first, 8)  # 6 batches per epoch: stops inside epoch 1
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == 2
    resumed = BatchLoader(list(range(22)), 4, ids_collate, seed=1)
    resumed.load_state_dict(state)
    assert head + stream(resumed, 7) == straight


def test_state_at_end_of_epoch_continues_with_next_epoch():
    loader = BatchLoader(list(range(8)), 4, ids_collate)
    it = iter(loader)
    next(it), next(it)  # epoch done, generator not yet exhausted
    other = BatchLoader(list(range(8)), 4, ids_collate)
    other.load_state_dict(loader.state_dict())
    assert flat(other) == [b.tolist() for b in (torch.tensor(x) for x in loader.epoch_batches(1))]
    assert other.epoch == 2 and other.position == 0


def test_load_state_dict_rejects_other_data():
    loader = BatchLoader(list(range(8)), 4, ids_collate)
    with pytest.raises(CheckpointError, match="num_examples"):
        BatchLoader(list(range(9)), 4, ids_collate).load_state_dict(loader.state_dict())


def test_group_by_length_batches_similar_lengths():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (1000,), generator=g).tolist()
    data = list(range(1000))
    grouped = BatchLoader(data, 8, ids_collate, group_by_length=lengths, seed=5)
    batches = grouped.epoch_batches(0)
    assert sorted(i for b in batches for i in b) == data

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    random_batches = BatchLoader(data, 8, ids_collate, seed=5).epoch_batches(0)
    assert padding(batches) < padding(random_batches) / 10
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # longest batch first
    assert batches != grouped.epoch_batches(1)  # batch order still shuffled per epoch
    by_callable = BatchLoader(data, 8, ids_collate, group_by_length=lambda i: lengths[i], seed=5)
    assert by_callable.epoch_batches(0) == batches
    dropped = BatchLoader(data[:1001 - 6], 8, ids_collate, group_by_length=lengths[:995], drop_last=True)
    assert all(len(b) == 8 for b in dropped.epoch_batches(0)) and len(dropped.epoch_batches(0)) == len(dropped)
    with pytest.raises(ConfigError, match="lengths"):
        BatchLoader(data, 8, ids_collate, group_by_length=lengths[:10])
