"""Notifications end to end: a real ``runkernel``, the real sync loop (``manage.py syncstatus
--loop``, no Redis: it sends the notifications itself), a webhook endpoint and a fake Telegram
Bot API on loopback, configured only by the documented environment variables.

A halt written by hand into control.json (docs/control-plane.md) reaches both; so does its
release. A frozen kernel (SIGSTOP) is "not reporting", and "reporting again" once it runs
(SIGCONT); a clean stop (SIGTERM) is "stopped", not "not reporting"."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support.console_process import ConsoleProcess, console_env
from tests.support.kernel_process import WAIT_S, KernelProcess, runkernel_args
from tests.support.notification_sink import NotificationSink
from tests.support.processes import kill_group
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

STALE_AFTER_S = 5.0
TOKEN = "4242:TESTTOKEN"


def write_control_by_hand(state_dir: Path, content: dict) -> None:
    """As a human at 3am would (docs/control-plane.md): a temp file moved under the lock."""
    (state_dir / "control.tmp").write_text(json.dumps(content))
    subprocess.run(["flock", "-w", "5", "control.lock", "mv", "control.tmp", "control.json"], cwd=state_dir,
                   check=True)


def heartbeat_age_s(state_dir: Path) -> float:
    status = json.loads((state_dir / "status.json").read_text())
    beat = datetime.fromisoformat(status["heartbeat_at"].replace("Z", "+00:00"))
    return (datetime.now(timezone.utc) - beat).total_seconds()


def test_halt_release_hang_recovery_and_stop_are_told_on_the_webhook_and_telegram(tmp_path):
    state_dir = tmp_path / "state"
    with NotificationSink() as hook, NotificationSink() as telegram:
        env = console_env(
            database_url=f"sqlite:///{tmp_path / 'console.sqlite3'}", drop=("REDIS_URL",),
            FORESIGHT_AUDIT_SPOOL=str(tmp_path / "audit-spool.jsonl"),
            FORESIGHT_STALE_AFTER_S=str(STALE_AFTER_S),
            FORESIGHT_NOTIFY_WEBHOOK_URLS=f"{hook.url}/services/T0/B0/secret",
            FORESIGHT_NOTIFY_TELEGRAM_TOKEN=TOKEN, FORESIGHT_NOTIFY_TELEGRAM_CHAT_IDS="-100777",
            FORESIGHT_NOTIFY_TELEGRAM_API=telegram.url, FORESIGHT_NOTIFY_TIMEOUT_S="3",
        )
        console = ConsoleProcess(tmp_path, env, timeout=WAIT_S)
        kernel = KernelProcess(state_dir, runkernel_args(demo=True, speed=600), log_path=tmp_path / "kernel.log")
        try:
            console.manage("migrate", "--noinput", "-v0")
            kernel.start()
            console.manage("addkernel", "--name", "demo", "--state-dir", str(state_dir))
            loop = console.spawn_manage("syncstatus", "syncstatus", "--loop", "--interval", "0.2")

            def told(sink: NotificationSink, *words: str) -> list[str]:
                if loop.poll() is not None:
                    raise AssertionError(f"syncstatus --loop exited: {(tmp_path / 'syncstatus.log').read_text()[-3000:]}")
                return [t for t in sink.texts() if all(w in t for w in words)]

            # 1. A halt by hand: both channels get it.
            write_control_by_hand(state_dir, {"halt": {"reason": "exchange is misbehaving", "by": "alice"}})
            for sink in (hook, telegram):
                wait_until(lambda: told(sink, "Kernel demo is HALTED", "exchange is misbehaving"), timeout=WAIT_S,
                           what="the halt's message", last_seen=sink.texts)
            assert {r["path"] for r in telegram.requests} == {f"/bot{TOKEN}/sendMessage"}
            assert {b["chat_id"] for b in telegram.received()} == {"-100777"}
            halted = [b for b in hook.received() if b.get("event") == "halt.observed"]
            assert len(halted) == 1 and halted[0]["kernel"] == "demo" and halted[0]["severity"] == "critical"

            # 2. Released (a command written by hand, as docs/control-plane.md shows).
            write_control_by_hand(state_dir, {"commands": [{"id": "hand-release-1", "action": "release"}]})
            wait_until(lambda: told(hook, "Halt RELEASED on kernel demo"), timeout=WAIT_S, what="the release's message",
                       last_seen=hook.texts)
            kernel.wait(lambda st: st["state"] == "paused", what="paused after the release")

            # 3. Frozen: not reporting; running again: recovered.
            os.kill(kernel.pid, signal.SIGSTOP)
            try:
                wait_until(lambda: told(hook, "Kernel demo is NOT REPORTING"), timeout=WAIT_S,
                           what="the not-reporting message", last_seen=hook.texts)
            finally:
                os.kill(kernel.pid, signal.SIGCONT)
            wait_until(lambda: told(hook, "Kernel demo is REPORTING AGAIN"), timeout=WAIT_S,
                       what="the recovery message", last_seen=hook.texts)
            wait_until(lambda: told(telegram, "Kernel demo is REPORTING AGAIN"), timeout=WAIT_S,
                       what="the recovery on telegram", last_seen=telegram.texts)

            # 4. A clean stop: "stopped", and never "not reporting" once its heartbeat is old.
            silent_before = len(told(hook, "NOT REPORTING"))
            assert kernel.terminate() == 0
            wait_until(lambda: told(hook, "Kernel demo STOPPED cleanly"), timeout=WAIT_S,
                       what="the stop's message", last_seen=hook.texts)
            wait_until(lambda: heartbeat_age_s(state_dir) > STALE_AFTER_S + 1, timeout=WAIT_S,
                       what="the stopped kernel's heartbeat older than the stale limit")
            console.manage("syncstatus")  # one more full round (stale check included), after that
            assert len(told(hook, "NOT REPORTING")) == silent_before
            assert len(told(hook, "STOPPED cleanly")) == 1
        finally:
            for proc in console.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        kill_group(proc)
            kernel.cleanup()
