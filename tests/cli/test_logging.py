"""plmkit.cli: the CLI configures logging (library code only logs); --quiet / --verbose anywhere."""
import logging
import subprocess
import sys

import pytest

from plmkit.cli import build_parser, main
from plmkit import datasets as F


@pytest.fixture
def chatty_dataset(monkeypatch):
    def recipe(downloads, tmp, out):
        logging.getLogger("plmkit.datasets").debug("debug detail")
        logging.getLogger("plmkit.datasets").info("converting chatty ...")
        logging.getLogger("plmkit.datasets").warning("a warning")
        (out / "data.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
        return {"data.jsonl": 1}

    monkeypatch.setitem(F.DATASETS, "chatty", recipe)


@pytest.mark.parametrize("flags, shown, hidden", [
    ([], ["converting chatty", "a warning"], ["debug detail"]),
    (["--quiet"], ["a warning"], ["converting chatty", "debug detail"]),
    (["-v"], ["debug detail", "converting chatty", "a warning"], []),
])
def test_info_lines_on_stderr_as_the_flags_say_results_on_stdout(tmp_path, capsys, chatty_dataset, flags, shown,
                                                                  hidden):
    for argv in (flags + ["data", "fetch", "chatty", "--cache-dir", str(tmp_path), "--force"],  # before the command
                 ["data", "fetch", "chatty", "--cache-dir", str(tmp_path), "--force"] + flags):  # or after it
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert out.startswith(f"chatty: {tmp_path / 'chatty'}")
        assert all(line in err for line in shown) and not any(line in err for line in hidden), (argv, err)
    assert not logging.getLogger("plmkit").handlers  # main() leaves no handler behind


def test_flags_parse_before_and_after_every_command():
    parser = build_parser()
    assert parser.parse_args(["--quiet", "data", "list"]).log_level == logging.WARNING
    assert parser.parse_args(["data", "list", "--verbose"]).log_level == logging.DEBUG
    assert parser.parse_args(["data", "list"]).log_level == logging.INFO
    assert parser.parse_args(["-q", "generate", "--model", "m", "--prompt", "x"]).log_level == logging.WARNING


def test_importing_plmkit_installs_no_handler_and_warnings_still_show():
    code = ("import logging, plmkit, plmkit.models; lg = logging.getLogger('plmkit'); assert not lg.handlers; "
            "logging.getLogger('plmkit.models').info('an info line'); "
            "logging.getLogger('plmkit.models').warning('a warning line')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a warning line\n"


def test_quiet_turns_the_progress_bars_off_while_the_command_runs():
    """Checked on the bars themselves: tqdm is imported by then, so its TQDM_DISABLE would not do."""
    import io

    from plmkit import cli
    from plmkit.utils.progress import progress_bar
    args = cli.build_parser().parse_args(["--quiet", "data", "list"])
    with cli.cli_logging(args.log_level):
        assert progress_bar(range(3), file=io.StringIO()).disable
    assert not progress_bar(range(3), file=io.StringIO()).disable  # on again for what runs next
    with cli.cli_logging(cli.build_parser().parse_args(["data", "list"]).log_level):
        assert not progress_bar(range(3), file=io.StringIO()).disable
