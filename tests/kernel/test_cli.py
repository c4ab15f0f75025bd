"""kernel/cli.py: the command line shared by ``python -m kernel`` and ``manage.py runkernel``."""
from __future__ import annotations

import pytest

from kernel import cli
from kernel.state_dir_lock import StateDirLock


def _opts(**changes):
    parser = cli.main_parser()
    opts = vars(parser.parse_args(["--state-dir", "x"]))
    opts.update(changes)
    return opts


@pytest.mark.parametrize("name", cli.POSITIVE_OPTIONS)
def test_options_that_must_be_positive_are_refused_at_zero(name):
    with pytest.raises(cli.BadOption, match=f"--{name.replace('_', '-')} must be > 0"):
        cli.options_check(opts=_opts(**{name: 0}))
    cli.options_check(opts=_opts())  # the defaults pass


def test_start_takes_epoch_ms_or_iso_and_names_what_it_refuses():
    assert cli.start_ms_parse(text=None) is None
    assert cli.start_ms_parse(text="1700000000000") == 1_700_000_000_000
    assert cli.start_ms_parse(text="2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert cli.start_ms_parse(text="2023-11-14T22:13:20") == 1_700_000_000_000  # no zone: UTC
    with pytest.raises(cli.BadOption, match="neither ISO 8601 nor epoch"):
        cli.start_ms_parse(text="yesterday")


def test_a_busy_state_dir_exits_1_with_one_line_naming_the_holder(tmp_path, capsys):
    held = StateDirLock.acquire_for(tmp_path)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["--state-dir", str(tmp_path)])
    finally:
        held.release()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another kernel (pid" in err and "Traceback" not in err
