"""The processes of a sharded evaluation simulated in one, for the metrics' `reduce(part)`: each process's
accumulator is updated with its share, then reduced as an EvalShard (plmkit.training.distributed) would."""
from __future__ import annotations


class _Recorder:
    """What a process sends: its values for each `sums` call and its items for each `gather`, unchanged."""

    def __init__(self):
        self.sums_calls, self.gather_calls = [], []

    def sums(self, values):
        self.sums_calls.append(list(values))
        return list(values)

    def gather(self, items):
        self.gather_calls.append(list(items))
        return list(items)


class _FirstProcess:
    """Process 0's view: each `sums` call the column sums of every process's values, each `gather` every
    process's items in process order."""

    def __init__(self, sent: list[_Recorder]):
        self.sent, self.n_sums, self.n_gathers = sent, 0, 0

    def sums(self, values):
        self.n_sums += 1
        return [sum(column) for column in zip(*(r.sums_calls[self.n_sums - 1] for r in self.sent))]

    def gather(self, items):
        self.n_gathers += 1
        return [item for r in self.sent for item in r.gather_calls[self.n_gathers - 1]]


def reduced_on_first(parts: list):
    """`parts[0]` (one accumulator per simulated process, each updated with its share) after `reduce`, as
    process 0 of an evaluation shared by len(parts) processes holds it."""
    sent = []
    for part in parts:  # (what each process sends; reducing with its own values alone changes nothing)
        sent.append(_Recorder())
        part.reduce(sent[-1])
    parts[0].reduce(_FirstProcess(sent))
    return parts[0]
