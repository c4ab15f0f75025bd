"""The kernel's Prometheus metrics: the one place they are defined, and their HTTP exporter.

Every metric lives on the kernel's own ``REGISTRY`` (never prometheus-client's global one:
a process that imports the kernel, such as the console, exports nothing of it by accident).
The rooms call the small functions below, one line each, where the thing they count
happens; each is an in-memory O(1) update (a counter, a gauge, a histogram bucket), so the
tick thread never waits on a scrape. What is a reading of state rather than an event
(the kernel's state, each slot's position and P&L) is read at scrape time by
``KernelView`` on the exporter's thread, from plain attributes, instead of being pushed
every tick.

Off (no ``--metrics-addr``), prometheus-client is not even imported (a restart after a crash
pays no import it does not use) and every call below is a no-op: the instruments are built
the first time something asks for them (the exporter's start, or ``REGISTRY``/``VIEW`` read
from outside, as the docs' test does), and count from then on.

The exporter is off by default; ``--metrics-addr HOST:PORT`` starts it on loopback only,
unless ``--metrics-allow-remote`` (or FORESIGHT_METRICS_ALLOW_REMOTE=1) says otherwise:
the metrics name slots, symbols and P&L. docs/monitoring.md lists every metric.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterable

from .errors import OperationalError

__all__ = ["REGISTRY", "KernelView", "MetricsExporter", "MetricsAddressRefused", "metrics_address_parse",
           "ALLOW_REMOTE_ENV"]

log = logging.getLogger("kernel")

ALLOW_REMOTE_ENV = "FORESIGHT_METRICS_ALLOW_REMOTE"
PREFIX = "foresight_kernel"
STATES = ("running", "paused", "halted", "stopped")

_LOADED_NS = time.time_ns()  # this process's kernel modules loaded: no halt it acts on was asked for earlier

# Wall seconds. A cycle should start within a tick or two of its close and run in milliseconds;
# the upper buckets catch the slow and the stuck (the default deadline is 10 s).
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (0.00001, 0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0)
_HALT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_NAMES = ("REGISTRY", "VIEW", "CYCLE_LAG", "CYCLE_DURATION", "CYCLES", "CYCLES_MISSED", "CYCLE_LOCK_WAIT", "RELOADS",
          "RELOAD_LOCK_WAIT", "HALTS", "HALT_LATENCY", "HALT_RELEASES", "GATE_REFUSALS", "ORDERS", "FILLS",
          "HEARTBEAT", "CASH", "EQUITY")
_live: SimpleNamespace | None = None  # the instruments, once built: None = every call a no-op
_build_lock = threading.Lock()


def _build() -> SimpleNamespace:
    """The instruments on the kernel's own registry, built once (prometheus-client imported here)."""
    global _live
    with _build_lock:
        if _live is not None:
            return _live
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        REGISTRY = CollectorRegistry(auto_describe=True)
        CYCLE_LAG = Histogram(f"{PREFIX}_cycle_start_lag_seconds", "Candle close to cycle start, wall seconds",
                              ["timeframe"], buckets=_LAG_BUCKETS, registry=REGISTRY)
        CYCLE_DURATION = Histogram(f"{PREFIX}_cycle_duration_seconds", "A cycle's run on its worker (evaluate and order)",
                                   ["timeframe"], buckets=_DURATION_BUCKETS, registry=REGISTRY)
        CYCLES = Counter(f"{PREFIX}_cycles", "Cycles folded into their slot, by result", ["timeframe", "result"],
                         registry=REGISTRY)
        CYCLES_MISSED = Counter(f"{PREFIX}_cycles_missed", "Closes whose cycle never ran (late dispatch or slot busy)",
                                ["timeframe"], registry=REGISTRY)
        CYCLE_LOCK_WAIT = Histogram(f"{PREFIX}_cycle_lock_wait_seconds",
                                    "The wait of a cycle that waited for the reload lock to pin its version",
                                    buckets=_WAIT_BUCKETS, registry=REGISTRY)
        RELOADS = Counter(f"{PREFIX}_reloads", "Reload results (loaded, unchanged, failed, abandoned, rolled_back, canary...)",
                          ["result"], registry=REGISTRY)
        RELOAD_LOCK_WAIT = Histogram(f"{PREFIX}_reload_lock_wait_seconds", "A reload's wait for the reload lock to swap",
                                     buckets=_WAIT_BUCKETS, registry=REGISTRY)
        HALTS = Counter(f"{PREFIX}_halts", "Halts engaged", ["source"], registry=REGISTRY)
        HALT_LATENCY = Histogram(f"{PREFIX}_halt_latency_seconds",
                                 "control.json written (its mtime) to the order gate closed, wall seconds",
                                 buckets=_HALT_BUCKETS, registry=REGISTRY)
        HALT_RELEASES = Counter(f"{PREFIX}_halt_releases", "Halts released", registry=REGISTRY)
        GATE_REFUSALS = Counter(f"{PREFIX}_gate_refusals", "Orders the gate refused, by reason", ["reason"],
                                registry=REGISTRY)
        ORDERS = Counter(f"{PREFIX}_orders", "Orders decided, by intent, side and outcome status",
                         ["intent", "side", "status"], registry=REGISTRY)
        FILLS = Counter(f"{PREFIX}_fills", "Fills recorded in the ledger, by side", ["side"], registry=REGISTRY)
        HEARTBEAT = Gauge(f"{PREFIX}_heartbeat_timestamp_seconds", "When status.json was last published (unix time)",
                          registry=REGISTRY)
        CASH = Gauge(f"{PREFIX}_cash", "Quote currency (USDT) cash at the broker, as of the last status", registry=REGISTRY)
        EQUITY = Gauge(f"{PREFIX}_equity", "Cash plus positions at their last prices, as of the last status",
                       registry=REGISTRY)
        VIEW = KernelView()
        REGISTRY.register(VIEW)
        _live = SimpleNamespace(**{n: v for n, v in locals().items() if n in _NAMES})
        return _live


def __getattr__(name: str) -> Any:
    """``metrics.REGISTRY``, ``metrics.VIEW``, ``metrics.CYCLES`` …: built on first use."""
    if name in _NAMES:
        return getattr(_build(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------ the rooms' one-line calls

# The labelled children the tick thread uses per cycle, looked up once: labels() takes a lock
# and builds a key, a dict hit does neither (thousands of slots fold at each close).
_cycle_children: dict[str, tuple[Any, Any]] = {}
_cycle_results: dict[tuple[str, str], Any] = {}


def cycle_folded(*, timeframe: str, result: str, lag_ms: int | None, speed: float, duration_us: int,
                 lock_wait_ns: int) -> None:
    """A finished cycle folded into its slot (tick thread)."""
    m = _live
    if m is None:
        return
    key = (timeframe, result.split(":", 1)[0])
    counter = _cycle_results.get(key)
    if counter is None:
        counter = _cycle_results.setdefault(key, m.CYCLES.labels(*key))
    counter.inc()
    children = _cycle_children.get(timeframe)
    if children is None:
        children = _cycle_children.setdefault(timeframe, (m.CYCLE_LAG.labels(timeframe),
                                                          m.CYCLE_DURATION.labels(timeframe)))
    if lag_ms is not None:
        children[0].observe(max(lag_ms, 0) / 1000.0 / max(speed, 1e-9))
    children[1].observe(duration_us / 1e6)
    if lock_wait_ns:  # only the cycles that waited (a reload was swapping): most never do
        m.CYCLE_LOCK_WAIT.observe(lock_wait_ns / 1e9)


def cycles_missed(*, timeframe: str, count: int) -> None:
    if _live is not None:
        _live.CYCLES_MISSED.labels(timeframe).inc(count)


def reload_recorded(*, result: str, lock_wait_ms: float | None) -> None:
    m = _live
    if m is None:
        return
    m.RELOADS.labels(result).inc()
    if lock_wait_ms is not None:
        m.RELOAD_LOCK_WAIT.observe(lock_wait_ms / 1000.0)


def halt_engaged(*, source: str, requested_ns: int | None, observed_at_ns: int | None) -> None:
    """``requested_ns``: when the halt was asked for (control.json's mtime), wall ns. A halt
    written before this process started measures the downtime, not the kernel: no sample."""
    m = _live
    if m is None:
        return
    m.HALTS.labels(source).inc()
    if requested_ns is not None and observed_at_ns is not None and requested_ns >= _LOADED_NS:
        # A file timestamp may be coarser than the clock: never a negative latency.
        m.HALT_LATENCY.observe(max(observed_at_ns - requested_ns, 0) / 1e9)


def halt_released() -> None:
    if _live is not None:
        _live.HALT_RELEASES.inc()


def gate_refused(*, reason: str) -> None:
    if _live is not None:
        _live.GATE_REFUSALS.labels(reason).inc()


def order_decided(*, intent: str | None, side: str | None, status: str | None) -> None:
    if _live is not None:
        _live.ORDERS.labels(intent or "?", side or "?", status or "?").inc()


def fills_recorded(*, side: str, count: int) -> None:
    if count and _live is not None:
        _live.FILLS.labels(side).inc(count)


def status_published(*, cash: float | None, equity: float | None) -> None:
    m = _live
    if m is None:
        return
    m.HEARTBEAT.set(time.time())
    m.CASH.set(cash if cash is not None else float("nan"))
    m.EQUITY.set(equity if equity is not None else float("nan"))


# ------------------------------------------------------------ state read at scrape time

class KernelView:
    """The kernel's state and each slot's book, read when scraped (on the exporter's thread).

    Reads plain attributes the tick thread replaces whole (floats, strings): a scrape sees
    each value as it was at some instant, never a torn one. The slots dict may change size
    under it (slot.add): the copy is retried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: tuple[dict[str, Any], Any, Any] | None = None

    def attach(self, *, slots: dict[str, Any], run_state: Any, halt: Any) -> None:
        with self._lock:
            self._sources = (slots, run_state, halt)

    def detach(self, *, slots: dict[str, Any]) -> None:
        with self._lock:
            if self._sources is not None and self._sources[0] is slots:
                self._sources = None

    def describe(self) -> Iterable[Any]:
        return []  # read at scrape time: nothing to check for duplicates at registration

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily

        with self._lock:
            sources = self._sources
        if sources is None:
            return
        slots, run_state, halt = sources
        state = run_state.state_name(halted=halt.engaged)
        yield StateSetMetricFamily(f"{PREFIX}_state", "The kernel's state as status.json names it",
                                   value={s: s == state for s in STATES})
        yield GaugeMetricFamily(f"{PREFIX}_tick", "Ticks run since start", value=run_state.tick)
        for _ in range(5):
            try:
                rows = list(slots.values())
                break
            except RuntimeError:  # changed size during the copy: take it again
                continue
        else:
            rows = []
        labels = ["slot", "symbol", "strategy", "timeframe"]
        qty = GaugeMetricFamily(f"{PREFIX}_slot_position_qty", "The slot's position, base currency", labels=labels)
        value = GaugeMetricFamily(f"{PREFIX}_slot_position_value",
                                  "The slot's position at its last price, quote currency", labels=labels)
        realized = GaugeMetricFamily(f"{PREFIX}_slot_realized_pnl", "Realized P&L of the slot's round trips",
                                     labels=labels)
        unrealized = GaugeMetricFamily(f"{PREFIX}_slot_unrealized_pnl",
                                       "The open position's P&L at the last price", labels=labels)
        equity = GaugeMetricFamily(f"{PREFIX}_slot_equity", "The slot's P&L: realized plus unrealized",
                                   labels=labels)
        faulted = GaugeMetricFamily(f"{PREFIX}_slot_paused", "1 when the slot is paused or faulted", labels=labels)
        for s in rows:
            cfg = s.config
            key = [cfg.id, cfg.symbol, cfg.strategy, cfg.timeframe]
            pos, last, entry = s.position_qty, s.last_price, s.entry_price
            open_pnl = pos * (last - entry) if pos > 0 and last is not None and entry is not None else 0.0
            qty.add_metric(key, pos)
            value.add_metric(key, pos * last if last is not None else 0.0)
            realized.add_metric(key, s.realized_pnl)
            unrealized.add_metric(key, open_pnl)
            equity.add_metric(key, s.realized_pnl + open_pnl)
            faulted.add_metric(key, 1.0 if s.state == "paused" else 0.0)
        yield from (qty, value, realized, unrealized, equity, faulted)
        yield GaugeMetricFamily(f"{PREFIX}_slots", "Slots the kernel runs", value=len(rows))


# ------------------------------------------------------------ the exporter

class MetricsAddressRefused(OperationalError):
    """--metrics-addr names a non-loopback address without leave to, or is not HOST:PORT."""


def _allow_remote_env() -> bool:
    return os.environ.get(ALLOW_REMOTE_ENV, "").strip().lower() in ("1", "true", "yes")


def metrics_address_parse(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port); a non-loopback host only when allowed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsAddressRefused(f"--metrics-addr {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (allow_remote or _allow_remote_env()) and not _is_loopback(host):
        raise MetricsAddressRefused(
            f"--metrics-addr {text!r} is not a loopback address: the metrics name slots, symbols and P&L. "
            f"Serve them on 127.0.0.1 (scrape through a tunnel or a local agent), or allow it explicitly "
            f"with --metrics-allow-remote or {ALLOW_REMOTE_ENV}=1")
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


@dataclass
class MetricsExporter:
    """prometheus-client's HTTP server on its own daemon threads: a scrape never touches the tick."""

    server: Any
    thread: threading.Thread
    url: str
    slots: dict[str, Any]

    @classmethod
    def start(cls, addr: str | None, *, allow_remote: bool, slots: dict[str, Any], run_state: Any,
              halt: Any) -> MetricsExporter | None:
        """None when ``addr`` is None (the default: no exporter)."""
        if not addr:
            return None
        host, port = metrics_address_parse(addr, allow_remote=allow_remote)
        from prometheus_client import start_http_server

        live = _build()
        try:
            server, thread = start_http_server(port, addr=host, registry=live.REGISTRY)
        except OSError as exc:
            raise MetricsAddressRefused(f"--metrics-addr {addr}: cannot listen: {exc}") from None
        bound_host, bound_port = server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        live.VIEW.attach(slots=slots, run_state=run_state, halt=halt)
        url = f"http://{shown}:{bound_port}/metrics"
        log.info("metrics served at %s", url)
        return cls(server=server, thread=thread, url=url, slots=slots)

    def close(self) -> None:
        _build().VIEW.detach(slots=self.slots)
        self.server.shutdown()
        self.server.server_close()
