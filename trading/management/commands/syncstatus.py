"""``python manage.py syncstatus [--loop --interval 1.0]``: mirror every kernel's status.json
into the database, audit its outcomes, flag stale heartbeats, flush the audit spool, then send
(or, with Redis, queue) the notifications of what it found (services/notifications.py)."""
from __future__ import annotations

import json
import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from trading import services
from trading.services.notifications import notifications_after_sync

log = logging.getLogger("trading.syncstatus")


class Command(BaseCommand):
    help = "Sync every kernel's status into the console (once, or in a loop) and flush the audit spool."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep syncing until SIGTERM/SIGINT")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds (--loop)")
        parser.add_argument("--stale-after", type=float, default=settings.FORESIGHT_STALE_AFTER_S,
                            help="seconds without a heartbeat before a kernel is reported stale")

    def handle(self, *args, **o):
        if not o["loop"]:
            for summary in self.round(o["stale_after"]):
                self.stdout.write(json.dumps(summary, default=str))
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while not stop.is_set():
            close_old_connections()  # a database that went away is reconnected next round
            try:
                self.round(o["stale_after"])
            except DatabaseError as exc:
                log.error("sync round failed, the database is unavailable: %s", exc)
            stop.wait(max(0.05, o["interval"]))

    def round(self, stale_after: float) -> list[dict]:
        summaries = services.kernels_sync(stale_after_s=stale_after)
        # Told after the status is mirrored, within the channel timeout; never raises.
        return [*summaries, notifications_after_sync()]
