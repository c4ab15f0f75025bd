"""``python manage.py kernelctl --state-dir DIR ACTION [SLOT]``: steer a kernel from a shell.

Writes commands and the halt flag into control.json (atomically, under the writers'
lock) and prints what status.json says. ``status`` and ``ledger`` only read.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kernel import commands as ctl
from kernel.control import ControlError
from kernel.errors import BadCommand
from kernel.ledger import Ledger
from kernel.protocol import ACTIONS

READ_ACTIONS = ("status", "ledger")
EXIT_REJECTED = 3
EXIT_TIMEOUT = 4


class Command(BaseCommand):
    help = "Send a command (or halt) to a kernel through its state dir, or read its status/ledger."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=READ_ACTIONS + ("halt",) + ACTIONS)
        parser.add_argument("slot", nargs="?", default=None, help="slot id, for slot.* actions")
        parser.add_argument("--state-dir", default=None, help="kernel state dir (default: FORESIGHT_STATE_DIR)")
        parser.add_argument("--reason", default=None, help="why (halt)")
        parser.add_argument("--strategy", default=None, help="strategy name (reload, rollback)")
        parser.add_argument("--args", dest="cmd_args", default=None, help="JSON object of command args (slot.configure, slot.add)")
        parser.add_argument("--wait", action="store_true", help="wait for the kernel's result")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds --wait waits")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args, **o):
        state_dir = Path(o["state_dir"] or settings.FORESIGHT_STATE_DIR)
        action = o["action"]
        if action == "status":
            return self._status(state_dir, o["json"])
        if action == "ledger":
            return self._ledger(state_dir, o["json"])
        by = ctl.default_actor()
        if action == "halt":
            try:
                ctl.halt(state_dir, o["reason"] or "halted from kernelctl", by)
            except ControlError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write("halt written to control.json")
            if o["wait"]:
                st = ctl.wait_state(state_dir, {"halted"}, o["timeout"])
                if st is None:
                    self.stderr.write("the kernel has not reported halted yet")
                    sys.exit(EXIT_TIMEOUT)
                self.stdout.write(f"kernel halted since {st.halt.since}")
            return
        cmd_args = {}
        if o["cmd_args"]:
            try:
                cmd_args = json.loads(o["cmd_args"])
            except ValueError as exc:
                raise CommandError(f"--args is not JSON: {exc}") from exc
            if not isinstance(cmd_args, dict):
                raise CommandError("--args must be a JSON object")
        if o["strategy"]:
            cmd_args["strategy"] = o["strategy"]
        try:
            cmd = ctl.build_command(action, o["slot"], cmd_args, issued_by=by)
            ctl.send(state_dir, cmd)
        except (BadCommand, ControlError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"command {cmd.id} ({action}{' ' + o['slot'] if o['slot'] else ''}) written")
        if o["wait"]:
            res = ctl.wait_result(state_dir, cmd.id, o["timeout"])
            if res is None:
                self.stderr.write(f"no result for {cmd.id} within {o['timeout']:.0f} s (is the kernel running?)")
                sys.exit(EXIT_TIMEOUT)
            if o["json"]:
                self.stdout.write(json.dumps(res, indent=2))
            else:
                self.stdout.write(f"{res['result']}{': ' + res['error'] if res.get('error') else ''}")
            if res["result"] != "applied":
                sys.exit(EXIT_REJECTED)

    def _status(self, state_dir: Path, as_json: bool) -> None:
        try:
            st = ctl.status(state_dir)
        except ControlError as exc:
            raise CommandError(str(exc)) from exc
        if st is None:
            raise CommandError(f"no status.json in {state_dir}: has the kernel ever run there?")
        if as_json:
            self.stdout.write(st.model_dump_json(indent=2))
            return
        halt = f"  HALTED since {st.halt.since}: {st.halt.reason}" if st.halt.engaged else ""
        self.stdout.write(f"state {st.state}  pid {st.pid}  tick {st.tick}  heartbeat {st.heartbeat_at}{halt}")
        if st.control_error:
            self.stdout.write(f"control.json error: {st.control_error}")
        for name, v in st.strategies.items():
            self.stdout.write(f"strategy {name}: v{v.version} {v.sha256[:12]} loaded {v.loaded_at}")
        for s in st.slots:
            fault = f"  fault: {s.fault}" if s.fault else ""
            self.stdout.write(
                f"  {s.id:<12} {s.symbol:<10} {s.timeframe:<4} {s.strategy:<14} v{s.strategy_version} "
                f"{s.state:<8} pos {s.position.qty:.6g} cycles {s.cycles} missed {s.missed_cycles}{fault}"
            )

    def _ledger(self, state_dir: Path, as_json: bool) -> None:
        path = state_dir / "ledger.sqlite3"
        if not path.exists():
            raise CommandError(f"no ledger in {state_dir}")
        ledger = Ledger(path)
        try:
            data = {
                "summary": ledger.summary(),
                "positions": {k: vars_of(p) for k, p in ledger.positions().items()},
                "orders": ledger.orders(),
                "fills": ledger.fills(),
            }
        finally:
            ledger.close()
        if as_json:
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(json.dumps(data["summary"]))
        for slot, p in data["positions"].items():
            self.stdout.write(f"  {slot:<12} qty {p['qty']:.8g} realized {p['realized_pnl']:.2f} trades {p['trades']}")


def vars_of(p) -> dict:
    return {f: getattr(p, f) for f in p.__slots__}
