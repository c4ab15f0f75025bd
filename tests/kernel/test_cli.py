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


def test_maker_fee_rate_reaches_the_paper_broker_and_defaults_to_the_fee_rate(tmp_path):
    from kernel.options import KernelOptions
    from kernel.venues import build_venue, paper_costs

    parser = cli.main_parser()
    given = vars(parser.parse_args(["--state-dir", "x", "--fee-rate", "0.002", "--maker-fee-rate", "0.0002"]))
    assert (given["fee_rate"], given["maker_fee_rate"]) == (0.002, 0.0002)
    venue = build_venue(KernelOptions(state_dir=tmp_path, fee_rate=0.002, maker_fee_rate=0.0002), state_dir=tmp_path)
    try:
        assert (venue.broker.fee_rate, venue.broker.maker_fee_rate) == (0.002, 0.0002)
    finally:
        venue.broker.close()
    assert "maker_fee_rate" not in paper_costs(KernelOptions(state_dir=tmp_path, fee_rate=0.002))
    (tmp_path / "b").mkdir()
    venue = build_venue(KernelOptions(state_dir=tmp_path / "b", fee_rate=0.002), state_dir=tmp_path / "b")
    try:
        assert venue.broker.maker_fee_rate == 0.002
    finally:
        venue.broker.close()
