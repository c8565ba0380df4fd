"""plmkit commands run one after the other by the processes of one torchrun job, as `torchrun -m plmkit`
would run each (the recipes find the process group set up and share it): the start-up of the processes
is paid once. `python dist_train_worker.py COMMANDS.json` (a list of argument lists); a command that
fails ends the job with its name."""
from __future__ import annotations

import json
import sys

from plmkit.cli import main
from plmkit.training import distributed

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        commands = json.load(f)
    with distributed.process_group("cpu"):
        for args in commands:
            if main(args) != 0:
                sys.exit(f"rank {distributed.rank()}: plmkit {' '.join(args)} failed")
