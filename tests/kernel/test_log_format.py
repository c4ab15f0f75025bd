"""Issue 15, item 3: the log line formats (kernel/log_setup.py, foresight_site/log_format.py).

JSON lines parse, one object a line, with ts/level/logger/msg/pid/thread and the context
fields; a command's id is a field in JSON and ``cmd=<id>`` in text, stamped on every line
logged while the command stream applies it; the console's redaction holds in JSON too.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kernel import cli
from kernel.log_setup import (
    CommandIdFilter,
    CommandTextFormatter,
    JsonLineFormatter,
    command_logging,
    log_format_from_env,
    logging_install,
)

REPO = Path(__file__).resolve().parents[2]


def _logger(name: str, formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(CommandIdFilter())
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_holds_the_fields_and_the_context():
    log, out = _logger("tests.logfmt.fields", JsonLineFormatter())
    before = time.time()
    log.warning("command %s %s: %s", "cmd-7", "pause", "applied", extra={"command_id": "cmd-7", "slot": "btc-5m"})
    after = time.time()
    [line] = _lines(out)
    assert list(line)[:6] == ["ts", "level", "logger", "msg", "pid", "thread"]
    assert line["level"] == "WARNING" and line["logger"] == "tests.logfmt.fields"
    assert line["msg"] == "command cmd-7 pause: applied"
    assert line["pid"] == os.getpid() and line["thread"] == threading.current_thread().name
    assert line["command_id"] == "cmd-7" and line["slot"] == "btc-5m"
    # UTC with milliseconds and a Z, within the second the record was made (time's own formatting).
    ts = line["ts"]
    assert len(ts) == len("2026-01-02T03:04:05.678Z") and ts.endswith("Z") and ts[19] == "."
    candidates = {time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) for t in (before, after)}
    assert ts[:19] in candidates


def test_one_object_a_line_even_for_a_multi_line_message_and_a_traceback():
    log, out = _logger("tests.logfmt.lines", JsonLineFormatter())
    log.info("first\nsecond")
    try:
        raise ValueError("the cause")
    except ValueError:
        log.exception("it broke")
    lines = _lines(out)
    assert len(out.getvalue().splitlines()) == 2 == len(lines)
    assert lines[0]["msg"] == "first\nsecond" and "command_id" not in lines[0]
    assert lines[1]["level"] == "ERROR" and "ValueError: the cause" in lines[1]["exc_info"]


def test_the_text_line_ends_with_the_command_id_only_when_it_names_one():
    log, out = _logger("tests.logfmt.text", CommandTextFormatter("%(levelname)s %(name)s: %(message)s"))
    log.info("pause applied", extra={"command_id": "cmd-1"})
    log.info("a tick")
    assert out.getvalue().splitlines() == ["INFO tests.logfmt.text: pause applied cmd=cmd-1",
                                           "INFO tests.logfmt.text: a tick"]


def test_lines_logged_while_a_command_applies_name_it_on_that_thread_only():
    log, out = _logger("tests.logfmt.context", JsonLineFormatter())
    other: list[None] = []

    def elsewhere() -> None:
        log.info("another thread")
        other.append(None)

    with command_logging("cmd-ctx"):
        log.info("inside")
        log.info("explicit wins", extra={"command_id": "cmd-explicit"})
        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
    log.info("after")
    by_msg = {line["msg"]: line.get("command_id") for line in _lines(out)}
    assert by_msg == {"inside": "cmd-ctx", "explicit wins": "cmd-explicit", "another thread": None, "after": None}
    assert other


def test_the_format_comes_from_the_option_else_the_environment(monkeypatch):
    parser = cli.main_parser()
    monkeypatch.delenv("FORESIGHT_LOG_FORMAT", raising=False)
    assert cli.log_format_choose(opts=vars(parser.parse_args(["--state-dir", "x"]))) == "text"
    monkeypatch.setenv("FORESIGHT_LOG_FORMAT", "JSON")
    assert cli.log_format_choose(opts=vars(parser.parse_args(["--state-dir", "x"]))) == "json"
    assert cli.log_format_choose(opts=vars(parser.parse_args(["--state-dir", "x", "--log-format", "text"]))) == "text"
    monkeypatch.setenv("FORESIGHT_LOG_FORMAT", "xml")
    with pytest.raises(cli.BadOption, match="FORESIGHT_LOG_FORMAT='xml'"):
        cli.log_format_choose(opts=vars(parser.parse_args(["--state-dir", "x"])))
    with pytest.raises(cli.BadOption):
        parser.parse_args(["--state-dir", "x", "--log-format", "xml"])
    assert log_format_from_env({}) == "text"


def test_logging_install_turns_handlers_already_there_into_json(monkeypatch):
    # Under manage.py runkernel, Django's LOGGING put a text handler on the root logger first.
    root = logging.getLogger()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    monkeypatch.setattr(root, "handlers", [handler])
    logging_install(log_format="json")
    assert root.handlers == [handler]  # kept, not doubled
    with command_logging("cmd-root"):
        logging.getLogger("kernel").warning("paused")
    [line] = _lines(out)
    assert (line["msg"], line["logger"], line["command_id"]) == ("paused", "kernel", "cmd-root")


KERNEL_MAIN_LOGS = """
import logging, sys
from kernel import cli
from kernel.log_setup import command_logging
cli.logging_configure(log_format=sys.argv[1])
with command_logging("cmd-main"):
    logging.getLogger("kernel").warning("command %s pause: applied", "cmd-main")
"""


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_python_m_kernel_logging_writes_the_chosen_format_on_stderr(log_format):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORESIGHT_", "DJANGO_"))}
    done = subprocess.run([sys.executable, "-c", KERNEL_MAIN_LOGS, log_format], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    if log_format == "json":
        parsed = json.loads(line)
        assert (parsed["level"], parsed["logger"], parsed["command_id"]) == ("WARNING", "kernel", "cmd-main")
    else:
        assert line.endswith(" WARNING kernel: command cmd-main pause: applied cmd=cmd-main")


CONSOLE_LOGS = """
import logging, django
django.setup()
from django.conf import settings
log = logging.getLogger("trading.services")
log.warning("token %s for %s", "fst_0a1b2c3d_" + "S3cr3tS3cr3tS3cr3tS3cr3t", "redis://:redis-pw-987@cache:6379/0",
            extra={"command_id": "cmd-console"})
try:
    raise RuntimeError("signing failed with key " + settings.SECRET_KEY)
except RuntimeError:
    log.exception("it broke")
print(settings.SECRET_KEY)
"""


def test_the_console_writes_json_with_its_secrets_redacted(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env.update(DJANGO_SETTINGS_MODULE="foresight_site.settings", FORESIGHT_LOG_FORMAT="json",
               DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", REDIS_URL="redis://:redis-pw-987@cache:6379/0")
    done = subprocess.run([sys.executable, "-c", CONSOLE_LOGS], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    secret_key = done.stdout.strip().splitlines()[-1]
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["msg"][:9] for line in lines] == ["token fst", "it broke"]
    assert lines[0]["command_id"] == "cmd-console" and lines[0]["logger"] == "trading.services"
    assert lines[0]["msg"] == "token fst_0a1b2c3d_[redacted] for redis://:[redacted]@cache:6379/0"
    assert "RuntimeError: signing failed with key [redacted]" in lines[1]["exc_info"]
    for secret in ("S3cr3tS3cr3t", "redis-pw-987", secret_key):
        assert secret not in done.stderr, secret


def test_the_console_text_format_keeps_its_line_and_adds_the_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env.update(DJANGO_SETTINGS_MODULE="foresight_site.settings", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    done = subprocess.run([sys.executable, "-c", CONSOLE_LOGS], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING trading\.services \[\d+:MainThread\] "
                        r"token fst_0a1b2c3d_\[redacted\] for redis://:\[redacted\]@cache:6379/0 cmd=cmd-console",
                        first), first


def test_a_bad_console_log_format_is_refused_at_start_up(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env.update(DJANGO_SETTINGS_MODULE="foresight_site.settings", FORESIGHT_LOG_FORMAT="yaml",
               DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "FORESIGHT_LOG_FORMAT='yaml'" in done.stderr


def test_gunicorn_and_celery_handlers_take_the_json_format():
    from celery.app.log import ColorFormatter
    from gunicorn.config import Config
    from gunicorn.glogging import Logger as GunicornLogger

    from foresight_site.log_format import gunicorn_logs_format, worker_handlers_format

    cfg = Config()
    cfg.set("accesslog", "-")
    glog = GunicornLogger(cfg)
    gunicorn_logs_format(gunicorn_log=glog, log_format="text")
    assert not isinstance(glog.error_log.handlers[0].formatter, JsonLineFormatter)
    gunicorn_logs_format(gunicorn_log=glog, log_format="json")
    assert glog.error_log.handlers and glog.access_log.handlers
    for handler in glog.error_log.handlers + glog.access_log.handlers:
        assert isinstance(handler.formatter, JsonLineFormatter)

    out = io.StringIO()
    worker = logging.getLogger("tests.logfmt.celery")
    worker.propagate = False
    handler = logging.StreamHandler(out)
    colour = ColorFormatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s", use_color=False)
    handler.setFormatter(colour)
    worker.handlers[:] = [handler]
    worker_handlers_format(logger=worker, log_format="text")
    assert handler.formatter is colour  # celery's own line in text
    worker_handlers_format(logger=worker, log_format="json")
    with command_logging("cmd-task"):
        worker.warning("delivered")
    [line] = _lines(out)
    assert (line["msg"], line["command_id"]) == ("delivered", "cmd-task")
    assert sum(isinstance(f, CommandIdFilter) for f in handler.filters) == 1


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(CommandIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_kernels_lines_while_a_command_applies_and_finishes_name_it(driver):
    records = _Records()
    kernel_log = logging.getLogger("kernel")
    kernel_log.addHandler(records)
    try:
        driver.add_slot("f1", "flip")  # deferred: the strategy loads on the reload thread, finishes on the tick
        reload = driver.command("reload", strategy="flip")
        driver.kernel.engage_halt("a test halt", source="test")
        release = driver.command("release")
    finally:
        kernel_log.removeHandler(records)
    assert reload["result"] == "applied" and release["result"] == "applied"
    named = {(r.getMessage(), getattr(r, "command_id", None)) for r in records.records}
    assert ("reload flip: unchanged", "t2-reload") in named  # the reloader's line, logged while it finished
    assert ("command t2-reload reload: applied", "t2-reload") in named
    assert any(m.startswith("HALT released (engaged since") and c == "t3-release" for m, c in named)
    halt_engaged = [r for r in records.records if r.getMessage().startswith("HALT engaged")]
    assert halt_engaged and getattr(halt_engaged[0], "command_id", None) is None  # no command applied it
    assert {c for _, c in named} >= {"t1-slot.add", "t2-reload", "t3-release"}
