"""The run's `metrics.jsonl` log and its `training_curves.png` plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from plmkit.errors import TrainingError
from plmkit.utils.files import append_line, atomic_write, atomic_write_text

log = logging.getLogger("plmkit")


class MetricsLog:
    """Append-only JSON-lines log; every record has a `step`. `write=False` (a rank other than 0 of a
    torchrun job) reads it but writes nothing."""

    def __init__(self, path: Path, write: bool = True) -> None:
        self.path = Path(path)
        self.write = write

    def append(self, record: dict[str, Any]) -> None:
        if self.write:
            append_line(self.path, json.dumps(record))  # a whole line or nothing (full disk: WriteError)

    def read(self) -> list[dict[str, Any]]:
        """The records; a torn last line (a write cut short by a kill or a full disk) is dropped
        with a notice, a malformed line elsewhere is an error naming file:line."""
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):  # no newline after it: an append that did not finish
                    log.warning("plmkit: %s:%d: dropped a torn last line (a write that did not finish)",
                                self.path, number)
                    break
                raise TrainingError(f"{self.path}:{number}: not a JSON record; the log was edited or damaged "
                                    "(delete the line to go on)") from None
        return records

    def reset(self) -> None:
        if self.write:
            atomic_write_text(self.path, "")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a run resumes from)."""
        if not self.write:
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Loss, LR and every `eval_*` metric against step, one panel each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if (key in ("loss", "lr") or key.startswith("eval_")) and isinstance(value, (int, float)):
                steps, values = series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(value)
    names = [k for k in ("loss", "lr") if k in series] + sorted(k for k in series if k.startswith("eval_"))
    fig = Figure(figsize=(7, 2.4 * max(len(names), 1)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(names), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        steps, values = series[name]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    atomic_write(path, lambda temp: fig.savefig(temp, dpi=100, format="png"))
