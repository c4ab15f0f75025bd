"""The exchange's dead man's switch, kept armed while the kernel's tick loop is alive.

ccxt's ``cancel_all_orders_after(timeout_ms)`` (where ``exchange.has`` says
``cancelAllOrdersAfter``) asks the exchange to cancel every resting order of the
account unless the call is repeated within the timeout. The kernel's tick loop calls
:meth:`DeadManSwitch.heartbeat` (cheap: it stores a time); a thread of its own
refreshes the switch every ``refresh_s`` (default 10 s, timeout 60 s) as long as a
heartbeat came within the last ``2 * refresh_s``. So:

- a killed kernel stops refreshing: the exchange cancels its resting orders within
  ``timeout_s``;
- a hung tick loop stops heartbeating: same, even though this thread still runs;
- a slow exchange never blocks a tick (the refresh is on this thread);
- a graceful stop disarms it (``timeout 0``), so resting orders stay as the operator left them.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kernel.errors import KernelError
from kernel.protocol import utcnow_iso

__all__ = ["DeadManSwitch"]

log = logging.getLogger("kernel.brokers.dead_man_switch")


class DeadManSwitch:
    def __init__(self, client: Any, *, timeout_s: float = 60.0, refresh_s: float = 10.0) -> None:
        if not 0 < refresh_s < timeout_s:
            raise ValueError("refresh_s must be > 0 and shorter than timeout_s")
        self.client = client
        self.timeout_s = float(timeout_s)
        self.refresh_s = float(refresh_s)
        self.method = "cancel_all_orders_after" if client.has("cancelAllOrdersAfter") else "cancel_all_after"
        self._last_beat: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.armed = False
        self.refreshes = 0
        self.last_refresh_at: str | None = None
        self.last_error: str | None = None

    def heartbeat(self) -> None:
        self._last_beat = time.monotonic()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="dead-man-switch", daemon=True)
                    self._thread.start()

    def refresh(self) -> bool:
        """Arm (or re-arm) the switch now. True if the exchange accepted it."""
        try:
            self.client.call(self.method, int(self.timeout_s * 1000), budget_s=min(5.0, self.refresh_s / 2))
        except KernelError as exc:
            self.last_error = str(exc)
            log.error("dead man's switch not refreshed: %s", exc)
            return False
        self.armed = True
        self.refreshes += 1
        self.last_refresh_at = utcnow_iso()
        self.last_error = None
        return True

    def disarm(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.refresh_s)
        if not self.armed:
            return
        try:
            self.client.call(self.method, 0, budget_s=5.0)
            self.armed = False
            log.info("dead man's switch disarmed")
        except KernelError as exc:
            self.last_error = str(exc)
            log.error("dead man's switch not disarmed (it fires in %.0fs): %s", self.timeout_s, exc)

    def describe(self) -> dict[str, Any]:
        return {"armed": self.armed, "timeout_s": self.timeout_s, "refresh_s": self.refresh_s,
                "refreshes": self.refreshes, "last_refresh_at": self.last_refresh_at,
                "last_error": self.last_error}

    def _run(self) -> None:
        while not self._stop.is_set():
            beat = self._last_beat
            if beat is not None and time.monotonic() - beat <= 2 * self.refresh_s:
                self.refresh()
            elif self.armed:
                log.critical("kernel tick loop silent for %.0fs: dead man's switch left to fire",
                             time.monotonic() - (beat or 0))
            self._wake.wait(self.refresh_s)
