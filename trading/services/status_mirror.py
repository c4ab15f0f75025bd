"""The console's mirror of a kernel's status.json: the Kernel and Slot rows, fills, equity
samples, and the kernel's outcomes (command results, reloads, halt changes) audited, each
once, keyed by what the kernel reported."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any, Iterable

from django.db import transaction

from kernel.protocol import CommandStatus, SlotStatus, Status

from ..models import AuditEvent, ControlCommand, EquitySample, Fill, Kernel, Slot
from .actors import Actor
from .audit import audit_key, audit_record, jsonable
from .command_delivery import ledger_results
from .notification_events import status_events_record
from .timestamps import iso, parse_dt

EQUITY_SAMPLE_EVERY_S = 10.0

log = logging.getLogger("trading.services")


def status_mirror_update(*, kernel: Kernel, st: Status, now: datetime) -> dict[str, Any]:
    """Bring the mirror in line with ``st``, under the kernel row's lock; only when status.json
    moved on since the last sync (same heartbeat, pid and tick: nothing to do). Returns the
    summary's share: the kernel's state, and what was created, resolved and audited."""
    done: dict[str, Any] = {}
    with transaction.atomic():
        k = Kernel.objects.select_for_update().get(pk=kernel.pk)
        prev = (k.halt_engaged, iso(k.halt_since), k.halt_reason)
        prev_status, prev_heartbeat = k.status or {}, k.heartbeat_at
        unchanged = (k.status.get("heartbeat_at") == st.heartbeat_at and k.status.get("pid") == st.pid
                     and k.status.get("tick") == st.tick)
        if not unchanged:
            k.state = st.state
            k.heartbeat_at = parse_dt(st.heartbeat_at)
            k.pid = st.pid
            k.tick = st.tick
            k.halt_engaged = st.halt.engaged
            k.halt_since = parse_dt(st.halt.since)
            k.halt_reason = st.halt.reason or ""
            if st.halt.engaged:
                k.halt_requested_at = None
            k.control_error = st.control_error or ""
            k.status = st.model_dump(mode="json")
            k.status_synced_at = now
            k.save(update_fields=[
                "state", "heartbeat_at", "pid", "tick", "halt_engaged", "halt_since", "halt_reason",
                "halt_requested_at", "control_error", "status", "status_synced_at"])
            done["slots_created"] = _sync_slots(k, st)
            done["fills"] = _sync_fills(k, st)
            _sync_equity(k, st, now)
            audited = _sync_halt(k, st, prev, now)
            resolved, results_audited = _sync_command_results(k, st, now, extra=_ledger_only_results(k, st))
            done["commands_resolved"] = resolved
            done["audited"] = audited + results_audited + _sync_reloads(k, st) + status_events_record(
                kernel=k, st=st, prev_status=prev_status, prev_heartbeat=prev_heartbeat)
        done["state"] = k.state
    _copy_mirror(k, kernel)
    return done


_SLOT_MIRROR_FIELDS = (
    "state", "fault", "strategy_version", "strategy_sha256", "position_qty", "entry_price", "last_price",
    "realized_pnl", "unrealized_pnl", "last_cycle_at", "next_cycle_at", "cycles", "missed_cycles",
    "running_config",
)


def _slot_mirror(s: SlotStatus) -> dict[str, Any]:
    return {
        "state": s.state,
        "fault": s.fault or "",
        "strategy_version": s.strategy_version,
        "strategy_sha256": s.strategy_sha256 or "",
        "position_qty": s.position.qty,
        "entry_price": s.position.entry_price,
        "last_price": s.last_price,
        "realized_pnl": s.position.realized_pnl,
        "unrealized_pnl": s.unrealized_pnl,
        "last_cycle_at": parse_dt(s.last_cycle_at),
        "next_cycle_at": parse_dt(s.next_cycle_at),
        "cycles": s.cycles,
        "missed_cycles": s.missed_cycles,
        "running_config": s.config.model_dump(mode="json") if s.config is not None else {},
    }


def _sync_slots(kernel: Kernel, st: Status) -> int:
    existing = {s.slot_id: s for s in Slot.objects.filter(kernel=kernel)}
    seen: set[str] = set()
    to_update: list[Slot] = []
    created = 0
    for s in st.slots:
        seen.add(s.id)
        mirror = _slot_mirror(s)
        slot = existing.get(s.id)
        if slot is None:
            cfg = s.config.model_dump(mode="json") if s.config is not None else {
                "symbol": s.symbol, "timeframe": s.timeframe, "strategy": s.strategy}
            Slot.objects.create(
                kernel=kernel, slot_id=s.id,
                **{f: cfg[f] for f in Slot.CONFIG_FIELDS if f in cfg},
                **mirror,
            )
            created += 1
            continue
        if any(getattr(slot, f) != v for f, v in mirror.items()):
            for f, v in mirror.items():
                setattr(slot, f, v)
            to_update.append(slot)
    for slot_id, slot in existing.items():
        if slot_id not in seen and slot.state != "unknown":
            slot.state = "unknown"
            to_update.append(slot)
    if to_update:
        Slot.objects.bulk_update(to_update, list(_SLOT_MIRROR_FIELDS), batch_size=500)
    return created


def _sync_fills(kernel: Kernel, st: Status) -> int:
    if not st.fills:
        return 0
    ids = [f.fill_id for f in st.fills]
    known = set(Fill.objects.filter(kernel=kernel, fill_id__in=ids).values_list("fill_id", flat=True))
    fresh = [
        Fill(kernel=kernel, fill_id=f.fill_id, client_order_id=f.client_order_id, slot_id=f.slot,
             side=f.side, qty=f.qty, price=f.price, fee=f.fee, pnl=f.pnl,
             at=datetime.fromtimestamp(f.ts_ms / 1000.0, tz=dt_timezone.utc))
        for f in st.fills if f.fill_id not in known
    ]
    Fill.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)


def _sync_equity(kernel: Kernel, st: Status, now: datetime) -> bool:
    if st.ledger.equity is None:
        return False
    recent = now - timedelta(seconds=EQUITY_SAMPLE_EVERY_S)
    if EquitySample.objects.filter(kernel=kernel, at__gt=recent).exists():
        return False
    EquitySample.objects.create(
        kernel=kernel, at=now, equity=st.ledger.equity, cash=st.ledger.cash,
        realized_pnl=st.ledger.realized_pnl, unrealized_pnl=st.ledger.unrealized_pnl or 0.0,
    )
    return True


def _existing_keys(keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    found: set[str] = set()
    for i in range(0, len(keys), 500):
        found.update(AuditEvent.objects.filter(dedupe_key__in=keys[i:i + 500]).values_list("dedupe_key", flat=True))
    return found


def _actor_of(command: ControlCommand | None, kernel: Kernel, result: CommandStatus | None = None) -> Actor:
    if command is None:
        # A command written by hand names its issuer; the kernel reports it in the detail.
        written = (result.detail or {}).get("issued_by") if result is not None else None
        if isinstance(written, str) and written.strip():
            return Actor(name=written.strip()[:200], source="kernel", user=None, ip=None)
        return Actor.for_kernel(kernel.name)
    return Actor(name=command.actor, source="kernel", user=command.user, ip=None)


def _ledger_only_results(kernel: Kernel, st: Status) -> list[CommandStatus]:
    """Results of delivered commands that status.json does not list: it keeps the latest 200,
    and a burst can scroll a result past it between two syncs. The kernel's ledger has them."""
    listed = {c.id for c in st.commands} | set(st.pending_commands)
    waiting = [cid for cid in ControlCommand.objects.filter(kernel=kernel, status=ControlCommand.Status.DELIVERED)
               .exclude(action="halt").order_by("pk").values_list("command_id", flat=True)[:5000]
               if cid not in listed]
    return list(ledger_results(kernel, waiting).values())


def _sync_command_results(kernel: Kernel, st: Status, now: datetime,
                          extra: Iterable[CommandStatus] = ()) -> tuple[int, int]:
    """Each command result in status.json (and ``extra``, from the ledger) → the command row
    and one audit event."""
    results = {c.id: c for c in (*extra, *st.commands)}
    if not results:
        return 0, 0
    rows = {c.command_id: c for c in ControlCommand.objects.filter(kernel=kernel, command_id__in=list(results))
            .select_related("user")}
    resolved = 0
    for cid, res in results.items():
        row = rows.get(cid)
        if row is not None and row.status != res.result:
            ControlCommand.objects.filter(pk=row.pk).update(
                status=res.result, resolved_at=parse_dt(res.at) or now, error=res.error or "",
                detail=jsonable(res.detail) if res.detail is not None else None,
            )
            resolved += 1
    keys = {cid: audit_key("command.result", kernel.name, cid) for cid in results}
    done = _existing_keys(keys.values())
    audited = 0
    for cid, res in results.items():
        if keys[cid] in done:
            continue
        row = rows.get(cid)
        payload: dict[str, Any] = {"action": res.action, "error": res.error, "detail": res.detail, "at": res.at}
        if row is None:
            payload["unknown_to_console"] = True
        else:
            payload["issued_by"] = row.actor
        if audit_record(
            action=f"command.{res.result}", actor=_actor_of(row, kernel, res), kernel=kernel,
            slot_id=res.slot or "", command_id=cid, outcome=res.result, payload=payload,
            dedupe_key=keys[cid], at=parse_dt(res.at),
        ):
            audited += 1
            # Once per result (the audit event's dedupe key), named by its command for one grep.
            (log.info if res.result == "applied" else log.warning)(
                "command %s %s for kernel %s: %s%s", cid, res.action, kernel.name, res.result,
                f" ({res.error})" if res.error else "", extra={"command_id": cid})
        if res.action == "release" and res.result == "applied" and isinstance(res.detail, dict):
            released = res.detail.get("released")
            if isinstance(released, dict) and released.get("since"):
                # A halt engaged and released between two syncs is still recorded, once.
                audited += _audit_halt_observed(kernel, released)
                audited += _audit_halt_cleared(kernel, released.get("since"), released.get("reason"), cid)
    return resolved, audited


def _sync_reloads(kernel: Kernel, st: Status) -> int:
    entries = [r for r in st.reloads if r.at and r.strategy and r.result]
    if not entries:
        return 0
    keys = [audit_key("reload", kernel.name, r.strategy, r.at, r.result) for r in entries]
    done = _existing_keys(keys)
    commands = {c.command_id: c for c in ControlCommand.objects.filter(
        kernel=kernel, command_id__in=[r.command_id for r in entries if r.command_id]).select_related("user")}
    audited = 0
    for r, key in zip(entries, keys):
        if key in done:
            continue
        row = commands.get(r.command_id) if r.command_id else None
        if audit_record(
            action=f"reload.{r.result}", actor=_actor_of(row, kernel), kernel=kernel,
            command_id=r.command_id or "", outcome=r.result,
            payload={"strategy": r.strategy, "old_sha256": r.old_sha256, "new_sha256": r.new_sha256,
                     "error": r.error, "lock_wait_ms": r.lock_wait_ms, "at": r.at},
            dedupe_key=key, at=parse_dt(r.at),
        ):
            audited += 1
    return audited


def _audit_halt_observed(kernel: Kernel, halt: dict) -> int:
    # The halt's id (control.json's halt block, status.json's halt.command_id), when it had one.
    command_id = halt.get("command_id") if isinstance(halt.get("command_id"), str) else ""
    observed = audit_record(
        action="halt.observed", actor=Actor.for_kernel(kernel.name), kernel=kernel, outcome="halted",
        command_id=command_id, payload={"since": halt.get("since"), "reason": halt.get("reason"),
                                        "cancelled_orders": halt.get("cancelled_orders") or []},
        dedupe_key=audit_key("halt.observed", kernel.name, halt.get("since")), at=parse_dt(halt.get("since")),
    ) is not None
    if observed:
        log.warning("HALT observed by kernel %s (engaged since %s): %s", kernel.name, halt.get("since"),
                    halt.get("reason"), extra={"command_id": command_id or None})
    return int(observed)


def _audit_halt_cleared(kernel: Kernel, since: Any, reason: Any, command_id: str = "") -> int:
    return int(audit_record(
        action="halt.cleared", actor=Actor.for_kernel(kernel.name), kernel=kernel, outcome="released",
        command_id=command_id, payload={"since": since, "reason": reason},
        dedupe_key=audit_key("halt.cleared", kernel.name, since),
    ) is not None)


def _sync_halt(kernel: Kernel, st: Status, prev: tuple[bool, str | None, str], now: datetime) -> int:
    prev_engaged, prev_since, prev_reason = prev
    audited = 0
    if st.halt.engaged:
        audited += _audit_halt_observed(kernel, st.halt.model_dump(mode="json"))
        ControlCommand.objects.filter(
            kernel=kernel, action="halt",
            status__in=[ControlCommand.Status.PENDING, ControlCommand.Status.DELIVERED],
        ).update(status=ControlCommand.Status.APPLIED, resolved_at=now,
                 detail={"halt_since": st.halt.since, "reason": st.halt.reason})
    elif prev_engaged and prev_since:
        audited += _audit_halt_cleared(kernel, prev_since, prev_reason)
    return audited




def _copy_mirror(source: Kernel, target: Kernel) -> None:
    if source is target:
        return
    for f in ("state", "heartbeat_at", "pid", "tick", "halt_engaged", "halt_since", "halt_reason",
              "halt_requested_at", "control_error", "status", "status_synced_at"):
        setattr(target, f, getattr(source, f))

