"""``python manage.py kernelctl --state-dir DIR ACTION [SLOT]``: steer a kernel from a shell.

Writes commands and the halt flag into control.json (atomically, under the writers'
lock) and prints what status.json says. ``status``, ``ledger``, ``versions STRATEGY`` (the
kernel's release store), ``diff STRATEGY A B`` (two stored versions, A/B numbers or sha256
prefixes) and ``report`` (the ledger's report: docs/live-trading.md, "Report") only read.

Actions are recorded in the console's audit log as the OS user (``user@host``), through
the same services as the admin and the API (trading.services): a console command, so it
lives in the console's app (kernel/ imports nothing of the console). The database is never
in the way of a halt: ``halt`` writes control.json before it touches the database, and if
the database is unavailable, the audit event is spooled to a local file and written once
it is back (``manage.py syncstatus`` flushes the spool). Other actions still write their
command when the database is down, and spool their audit event too.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from kernel import control_client as ctl
from kernel.control import ControlError
from kernel.ledger import LEDGER_FILE, Ledger
from kernel.errors import ReloadFailed
from kernel.protocol import ACTIONS
from kernel.release_store import VERSIONS_DIR, store_diff, store_list
from kernel.report_source import FORMATS as REPORT_FORMATS, render as render_report
from trading import services
from trading.models import Kernel

READ_ACTIONS = ("status", "ledger", "versions", "diff", "report")
EXIT_REJECTED = 3
EXIT_TIMEOUT = 4


class Command(BaseCommand):
    help = "Send a command (or halt) to a kernel through its state dir, or read its status/ledger."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=READ_ACTIONS + ("halt",) + ACTIONS)
        parser.add_argument("slot", nargs="?", default=None,
                            help="slot id, for slot.* actions; the strategy, for versions and diff")
        parser.add_argument("refs", nargs="*", default=[], help="diff: the two versions (numbers or sha256 prefixes)")
        parser.add_argument("--state-dir", default=None, help="kernel state dir (default: FORESIGHT_STATE_DIR)")
        parser.add_argument("--reason", default=None, help="why (halt; release: goes into the audit log)")
        parser.add_argument("--strategy", default=None, help="strategy name (reload, rollback)")
        parser.add_argument("--args", dest="cmd_args", default=None, help="JSON object of command args (slot.configure, slot.add)")
        parser.add_argument("--wait", action="store_true", help="wait for the kernel's result")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds --wait waits")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--format", dest="report_format", choices=tuple(REPORT_FORMATS), default="text",
                            help="report: text tables, JSON, or a CSV of the trades")
        parser.add_argument("--slot", dest="report_slot", default=None, help="report: one slot only")
        parser.add_argument("--since", default=None, help="report: from (2026-01-02 or 2026-01-02T03:04Z, UTC)")
        parser.add_argument("--until", default=None, help="report: to (same forms)")

    def handle(self, *args, **o):
        state_dir = Path(o["state_dir"] or settings.FORESIGHT_STATE_DIR)
        action = o["action"]
        if action == "status":
            return self._status(state_dir, o["json"])
        if action == "ledger":
            return self._ledger(state_dir, o["json"])
        if action == "report":  # the ledger read-only: a finished replay or a running kernel
            try:
                text = render_report(state_dir, fmt="json" if o["json"] else o["report_format"],
                                     slot=o["report_slot"] or o["slot"], since=o["since"], until=o["until"])
            except (ValueError, FileNotFoundError) as exc:
                raise CommandError(str(exc)) from exc
            return self.stdout.write(text, ending="" if text.endswith("\n") else "\n")
        if action in ("versions", "diff"):
            strategy = o["slot"] or o["strategy"]
            if not strategy:
                raise CommandError(f"{action} needs a strategy: kernelctl {action} STRATEGY"
                                   + (" A B" if action == "diff" else ""))
            if action == "versions":
                return self._versions(state_dir, strategy, o["json"])
            return self._diff(state_dir, strategy, o["refs"])
        if o["refs"]:
            raise CommandError(f"unexpected arguments: {' '.join(o['refs'])}")
        if action == "halt":
            return self._halt(state_dir, o["reason"] or "halted from kernelctl", o["wait"], o["timeout"])
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
        if action == "release" and o["reason"]:
            cmd_args["reason"] = o["reason"]  # into the command's args: its "command.issued" audit event
        return self._command(state_dir, action, o["slot"], cmd_args, o)

    # ------------------------------------------------------------------ halt

    def _halt(self, state_dir: Path, reason: str, wait: bool, timeout: float) -> None:
        if not state_dir.is_dir():
            raise CommandError(f"state dir {state_dir} does not exist or is not a directory")
        actor = services.Actor.cli()
        # An unsaved row: halt_engage writes control.json before it looks anything up.
        kernel = Kernel(name=services.kernel_name_for_dir(state_dir), state_dir=str(state_dir.resolve()))
        try:
            command = services.halt_engage(kernel=kernel, actor=actor, reason=reason)
        except services.ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write("halt written to control.json")
        if command is None:
            self.stderr.write(
                f"database unavailable: the halt is written, its audit event is spooled to "
                f"{services.audit_spool_path()} (syncstatus writes it to the database once it is back)"
            )
        self._wait_halted(state_dir, wait, timeout, command.kernel if command is not None else None)

    def _wait_halted(self, state_dir: Path, wait: bool, timeout: float, kernel: Kernel | None) -> None:
        if not wait:
            return
        st = services.halt_wait(state_dir=state_dir, timeout_s=timeout, kernel=kernel)
        if st is None:
            self.stderr.write("the kernel has not reported halted yet")
            sys.exit(EXIT_TIMEOUT)
        self.stdout.write(f"kernel halted since {st.halt.since}")

    # ------------------------------------------------------------------ commands

    def _command(self, state_dir: Path, action: str, slot: str | None, cmd_args: dict, o: dict) -> None:
        actor = services.Actor.cli()
        command = None
        try:
            command = services.command_issue_for_state_dir(state_dir=state_dir, action=action, actor=actor,
                                                           slot_id=slot, args=cmd_args)
            command_id = command.command_id
        except services.ServiceError as exc:
            raise CommandError(exc.message) from exc
        except DatabaseError as exc:
            # 2am: the database is down, the command still goes out.
            self.stderr.write(f"database unavailable ({exc}): writing the command without it")
            try:
                wire = services.command_issue_offline(
                    state_dir=state_dir, kernel_name=services.kernel_name_for_dir(state_dir),
                    action=action, actor=actor, slot_id=slot, args=cmd_args)
            except services.ServiceError as err:
                raise CommandError(err.message) from err
            command_id = wire.id
            self.stderr.write(f"audit event spooled to {services.audit_spool_path()} "
                              "(syncstatus writes it to the database once it is back)")
        if command is not None and command.status == command.Status.PENDING:
            raise CommandError(
                f"command {command_id} is recorded but NOT in control.json yet: {command.error} "
                f"(syncstatus retries until {command.expires_at:%H:%M:%S} UTC)"
            )
        if command is not None and command.status == command.Status.FAILED:
            raise CommandError(f"command {command_id} failed: {command.error}")
        self._report(state_dir, command_id, action, slot, command, o)

    def _report(self, state_dir: Path, command_id: str, action: str, slot: str | None, command, o: dict) -> None:
        self.stdout.write(f"command {command_id} ({action}{' ' + slot if slot else ''}) written")
        if not o["wait"]:
            return
        res = None
        if command is not None:
            try:
                command = services.command_wait(command=command, timeout_s=o["timeout"])
            except DatabaseError as exc:
                self.stderr.write(f"database unavailable ({exc}): waiting on status.json alone")
                res = ctl.wait_result(state_dir, command_id, o["timeout"])
            else:
                if command.status in (command.Status.APPLIED, command.Status.REJECTED):
                    res = {"id": command.command_id, "action": command.action, "slot": command.slot_id or None,
                           "result": command.status, "error": command.error or None, "detail": command.detail}
        else:
            res = ctl.wait_result(state_dir, command_id, o["timeout"])
        if res is None:
            self.stderr.write(f"no result for {command_id} within {o['timeout']:.0f} s (is the kernel running?)")
            sys.exit(EXIT_TIMEOUT)
        if o["json"]:
            self.stdout.write(json.dumps(res, indent=2))
        else:
            message = res["detail"].get("message") if isinstance(res.get("detail"), dict) else None
            if message:  # a reload's old → new version and sha256, a flatten's fill price and P&L
                self.stdout.write(message)
            self.stdout.write(f"{res['result']}{': ' + res['error'] if res.get('error') else ''}")
        if res["result"] != "applied":
            sys.exit(EXIT_REJECTED)

    # ------------------------------------------------------------------ reads (no database)

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
            drift = (f"  working tree differs from running v{v.version}"
                     if v.working_tree is not None and v.working_tree.differs else "")
            self.stdout.write(f"strategy {name}: v{v.version} {v.sha256[:12]} loaded {v.loaded_at}{drift}")
        for s in st.slots:
            fault = f"  fault: {s.fault}" if s.fault else ""
            self.stdout.write(
                f"  {s.id:<12} {s.symbol:<10} {s.timeframe:<4} {s.strategy:<14} v{s.strategy_version} "
                f"{s.state:<8} pos {s.position.qty:.6g} cycles {s.cycles} missed {s.missed_cycles} "
                f"realized {s.position.realized_pnl:.2f} trades {s.position.trades} wins {s.position.wins}"
                f"{f' dust {s.dust_qty:.8g}' if s.dust_qty else ''}{fault}"
                f"{f'  unsellable: {s.unsellable}' if s.unsellable else ''}"
            )
            for o in s.resting_orders:  # limit orders resting at the broker (docs/live-trading.md)
                self.stdout.write(f"    resting {o.get('side')} {o.get('qty')} @ {o.get('limit_price')} "
                                  f"{o.get('time_in_force')} filled {o.get('filled_qty') or 0} "
                                  f"{o.get('status')} {o.get('client_order_id')}")
        lg = st.ledger
        self.stdout.write(f"total realized {lg.realized_pnl:.2f} trades {lg.trades} wins {lg.wins} fees {lg.fees:.2f}"
                          f"{f'  trades pending for {lg.trades_pending} order(s)' if lg.trades_pending else ''}")

    def _versions(self, state_dir: Path, strategy: str, as_json: bool) -> None:
        root = state_dir / VERSIONS_DIR
        if not root.is_dir():
            raise CommandError(f"no release store in {state_dir} (has a kernel of this version run there?)")
        entries = store_list(root, strategy, verify=True)
        try:
            st = ctl.status(state_dir)
        except ControlError:
            st = None
        running = st.strategies.get(strategy) if st is not None else None
        current = running.sha256 if running is not None else None
        for m in entries:
            m["current"] = m.get("sha256") == current
        if as_json:
            self.stdout.write(json.dumps(entries, indent=2))
            return
        if not entries:
            raise CommandError(f"no stored version of {strategy} in {root}")
        for m in entries:
            mark = "  * current" if m["current"] else ""
            bad = f"  CORRUPT: {m['corrupt']}" if m.get("corrupt") else ""
            self.stdout.write(f"v{m.get('number')!s:<4} {m['sha256'][:12]}  {m.get('first_loaded_at')}  "
                              f"by {m.get('by') or '-'}  commit {str(m.get('commit'))[:12]}{mark}{bad}")

    def _diff(self, state_dir: Path, strategy: str, refs: list[str]) -> None:
        if len(refs) != 2:
            raise CommandError("diff needs two versions: kernelctl diff STRATEGY A B (numbers or sha256 prefixes)")
        try:
            text = store_diff(state_dir / VERSIONS_DIR, strategy, refs[0], refs[1])
        except ReloadFailed as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(text or f"{refs[0]} and {refs[1]} hold the same code", ending="")

    def _ledger(self, state_dir: Path, as_json: bool) -> None:
        path = state_dir / LEDGER_FILE
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
            dust = f" dust {p['dust_qty']:.8g}" if p.get("dust_qty") else ""
            stuck = f"  unsellable: {p['unsellable']}" if p.get("unsellable") else ""
            self.stdout.write(f"  {slot:<12} qty {p['qty']:.8g} realized {p['realized_pnl']:.2f} trades {p['trades']}"
                              f" wins {p['wins']}{dust}{stuck}")


def vars_of(p) -> dict:
    return {f: getattr(p, f) for f in p.__slots__}
