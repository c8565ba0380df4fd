"""Shared by the data tests: a stand-in for progress_bar (tqdm) that records its total and updates."""
import pytest


class RecordingBar:
    def __init__(self, total=None, **kwargs):
        self.total, self.updates = total, []

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        pass


@pytest.fixture
def progress_bars(monkeypatch):
    """`progress_bars(module)`: the list of bars that `module`'s progress_bar makes from now on."""
    def record(module):
        bars = []
        monkeypatch.setattr(module, "progress_bar", lambda **kwargs: bars.append(RecordingBar(**kwargs)) or bars[-1])
        return bars
    return record
