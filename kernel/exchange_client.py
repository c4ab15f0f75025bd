"""One ccxt exchange instance behind a lock, speaking the kernel's error vocabulary.

The ccxt broker and the ccxt feed of a kernel share one :class:`ExchangeClient`, so
one rate-limit throttle paces every request to the exchange. The sync client's
throttle is not thread-safe, so every request is made under the client's lock (the
lock is released while a retry waits).

ccxt's unified errors become :mod:`kernel.errors`:

=============================================================  ==========================
ccxt                                                           kernel
=============================================================  ==========================
``NetworkError`` (``RequestTimeout``, ``DDoSProtection``,       ``TemporaryError``: retried
``RateLimitExceeded``, ``ExchangeNotAvailable``,                with backoff within a
``InvalidNonce``), other ``OperationFailed``                    deadline
``AuthenticationError`` (``PermissionDenied``,                  ``AuthenticationFailed``
``AccountSuspended``)
``OrderNotFound``                                               ``OrderNotFound``
``DuplicateOrderId``, or "duplicate"/"already used" in an       ``DuplicateClientOrderId``
``InvalidOrder``'s message                                      (an ``OrderRejected``)
any other ``ExchangeError`` (``InsufficientFunds``,             ``OrderRejected``: never
``InvalidOrder``, ``BadRequest``, ...)                          retried
=============================================================  ==========================

Error messages pass through the credentials' redactor: an exchange that echoes a key
in an error body does not get it into a slot's fault or status.json.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable

from .credentials import Credentials, RedactSecrets
from .errors import AuthenticationFailed, KernelError, OperationalError, OrderNotFound, OrderRejected, TemporaryError

__all__ = [
    "ExchangeClient",
    "DuplicateClientOrderId",
    "build_exchange",
    "translate_error",
    "SPOT_OPTIONS",
    "override_api_url",
    "RateLimiter",
]

log = logging.getLogger("kernel.exchange")

# Spot trading only; no private calls while loading markets (currencies, margin pairs).
SPOT_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    },
    "okx": {"fetchMarkets": {"types": ["spot"]}},
    "bybit": {"fetchMarkets": {"types": ["spot"]}},
}

_DUPLICATE = re.compile(r"duplicate|already (been )?used|already exists|not unique", re.IGNORECASE)


class DuplicateClientOrderId(OrderRejected):
    """The exchange already has an order with this client id: fetch it instead of failing."""


def translate_error(exc: BaseException, redact: Callable[[str], str] = lambda s: s) -> KernelError:
    """The kernel error for a ccxt error (see the table in the module docstring)."""
    import ccxt

    message = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ccxt.OperationFailed):  # NetworkError and its family, BadResponse, CancelPending
        return TemporaryError(message)
    if isinstance(exc, ccxt.AuthenticationError):
        return AuthenticationFailed(message)
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(message)
    if isinstance(exc, ccxt.DuplicateOrderId) or (
        isinstance(exc, ccxt.InvalidOrder) and _DUPLICATE.search(str(exc))
    ):
        return DuplicateClientOrderId(message)
    return OrderRejected(message)


class _RedactingLogger:
    """What ccxt gets as ``exchange.logger``: its debug lines carry request headers
    (API keys among them); they are formatted, redacted, then logged."""

    def __init__(self, logger: logging.Logger, redactor: RedactSecrets) -> None:
        self._logger = logger
        self._redactor = redactor

    def _log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self._logger.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join([str(msg), *map(str, args)])
        kwargs.pop("exc_info", None)
        self._logger.log(level, self._redactor.redact(text))

    def debug(self, msg: Any, *args: Any, **kw: Any) -> None:
        self._log(logging.DEBUG, msg, *args, **kw)

    def info(self, msg: Any, *args: Any, **kw: Any) -> None:
        self._log(logging.INFO, msg, *args, **kw)

    def warning(self, msg: Any, *args: Any, **kw: Any) -> None:
        self._log(logging.WARNING, msg, *args, **kw)

    warn = warning

    def error(self, msg: Any, *args: Any, **kw: Any) -> None:
        self._log(logging.ERROR, msg, *args, **kw)

    def exception(self, msg: Any, *args: Any, **kw: Any) -> None:
        self._log(logging.ERROR, msg, *args, **kw)

    def critical(self, msg: Any, *args: Any, **kw: Any) -> None:
        self._log(logging.CRITICAL, msg, *args, **kw)

    def log(self, level: int, msg: Any, *args: Any, **kw: Any) -> None:
        self._log(level, msg, *args, **kw)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return self._logger.isEnabledFor(level)


def build_exchange(
    exchange_id: str,
    *,
    credentials: Credentials | None = None,
    sandbox: bool = False,
    timeout_ms: int = 5_000,
    options: dict[str, Any] | None = None,
    markets: dict[str, Any] | None = None,
    api_url: str | None = None,
) -> Any:
    """A configured ccxt exchange: rate limiting on, verbose off, spot markets only,
    sandbox URLs when asked (refused if the exchange has none), or every API URL
    pointed at ``api_url`` (:func:`override_api_url`). Makes no request."""
    import ccxt

    if not isinstance(exchange_id, str) or exchange_id not in ccxt.exchanges:
        raise OperationalError(f"unknown exchange {exchange_id!r}: not one of ccxt's exchanges")
    if credentials is not None and credentials.exchange_id != exchange_id:
        raise OperationalError(f"credentials are for {credentials.exchange_id}, not {exchange_id}")
    config: dict[str, Any] = {
        "enableRateLimit": True,  # ccxt's throttle: requests are spaced by exchange.rateLimit
        "verbose": False,  # verbose prints request headers, keys included
        "timeout": int(timeout_ms),
        "options": {**SPOT_OPTIONS.get(exchange_id, {}), "defaultType": "spot", **(options or {})},
    }
    if credentials is not None:
        config.update(credentials.ccxt_config())
    if markets is not None:
        config["markets"] = markets
    exchange = getattr(ccxt, exchange_id)(config)
    # Currencies are not needed to trade spot, and loading them is a private call on some exchanges.
    exchange.has = {**exchange.has, "fetchCurrencies": False}
    redactor = RedactSecrets(credentials.secret_values() if credentials else [])
    exchange.logger = _RedactingLogger(logging.getLogger(f"kernel.exchange.{exchange_id}"), redactor)
    if sandbox and api_url:
        raise OperationalError("--sandbox and --exchange-url both choose the exchange's URLs: give one")
    if sandbox:
        if not exchange.urls.get("test"):
            raise OperationalError(f"{exchange_id} has no sandbox (test) URLs in ccxt")
        exchange.set_sandbox_mode(True)
    if api_url:
        override_api_url(exchange, api_url)
    return exchange


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def override_api_url(exchange: Any, base_url: str) -> dict[str, Any]:
    """Point every REST URL of ``exchange`` (ccxt's ``urls['api']``) at ``base_url``: its
    scheme and host (and a path prefix, if given) replace the exchange's, the path of each
    endpoint is kept (Binance spot: ``http://127.0.0.1:PORT/api/v3/...``). For a test
    server or a proxy. Plain ``http`` only to a loopback host: keys never travel in clear.
    Returns the new ``urls['api']``."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url.strip()) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise OperationalError(f"--exchange-url {base_url!r}: expected http(s)://host[:port][/prefix]")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK and not parts.hostname.startswith("127."):
        raise OperationalError(f"--exchange-url {base_url!r}: plain http only to a loopback host; use https")
    prefix = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    def rebase(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rebase(v) for k, v in value.items()}
        if isinstance(value, str) and "://" in value:
            old = urlsplit(value)
            return prefix + old.path + (f"?{old.query}" if old.query else "")
        return value

    api = rebase(exchange.urls.get("api"))
    if not api:
        raise OperationalError(f"{exchange.id} has no REST API URLs in ccxt to override")
    exchange.urls = {**exchange.urls, "api": api}
    exchange.hostname = parts.netloc  # for exchanges whose URLs are templates on {hostname}
    return api


class RateLimiter:
    """A thread-safe token bucket shared by several exchange instances (ccxt's own throttle
    is per instance and not thread-safe): on average one request per ``interval_s`` (ccxt's
    ``rateLimit``), with bursts of up to ``burst`` requests after a quiet spell (the series
    of one close, fetched together). ``acquire`` blocks until a token is free."""

    def __init__(self, interval_s: float, burst: int = 1, *, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval_s = max(0.0, float(interval_s))
        self.burst = max(1, int(burst))
        self._monotonic, self._sleep = monotonic, sleep
        self._lock = threading.Lock()
        self._tat = monotonic()  # the "theoretical arrival time" of the next request (GCRA)
        self.waited_s = 0.0

    def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        with self._lock:  # reserve a start time; sleep outside the lock
            now = self._monotonic()
            tat = max(self._tat, now)
            start = max(now, tat - (self.burst - 1) * self.interval_s)
            self._tat = tat + self.interval_s
            wait = start - now
            self.waited_s += wait
        if wait > 0:
            self._sleep(wait)
        return wait


class ExchangeClient:
    """A ccxt exchange shared by one kernel's broker and feed. Thread-safe.

    ``call(method, *args)`` retries TemporaryError with exponential backoff until
    ``budget_s`` (default ``retry_budget_s``) is spent, then raises the last one;
    ``call_once`` makes exactly one attempt. Both raise only :mod:`kernel.errors`.
    """

    def __init__(
        self,
        exchange: Any,
        *,
        credentials: Credentials | None = None,
        sandbox: bool = False,
        retry_budget_s: float = 5.0,
        backoff_s: float = 0.25,
        max_backoff_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        factory: Callable[[], Any] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.exchange = exchange
        self.factory = factory  # builds another instance of this exchange, without keys (public_clones)
        self.limiter = limiter  # shared with public_clones, when there are some
        self.id: str = exchange.id
        self.sandbox = sandbox
        self.credentials = credentials
        self.retry_budget_s = float(retry_budget_s)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._redactor = RedactSecrets(credentials.secret_values() if credentials else [])
        self.requests = 0  # attempts made (one ccxt call may make several HTTP requests)
        self.retries = 0

    def __repr__(self) -> str:
        return f"ExchangeClient({self.id}{', sandbox' if self.sandbox else ''})"

    @property
    def has_keys(self) -> bool:
        return self.credentials is not None

    def has(self, feature: str) -> bool:
        return bool(self.exchange.has.get(feature))

    def redact(self, text: str) -> str:
        return self._redactor.redact(text)

    def public_clones(self, n: int, *, burst: int = 10) -> list["ExchangeClient"]:
        """``n`` more clients, each on its own exchange instance without keys (public data:
        candles), so that ``n + 1`` requests can be in flight at once: ccxt's sync throttle is
        not thread-safe, so one instance per thread. This client and its clones then share one
        :class:`RateLimiter` (ccxt's ``rateLimit`` on average, bursts of ``burst``: the
        series of one close; Binance allows 6,000 request weight a minute, a klines request
        weighs 1-2); the clones' own throttle is off. Markets are theirs to set (``use_markets``). [] without
        a factory."""
        if self.factory is None or n <= 0:
            return []
        if self.limiter is None:
            self.limiter = RateLimiter(float(self.exchange.rateLimit) / 1000.0, burst=max(burst, n + 1))
        clones = []
        for _ in range(n):
            exchange = self.factory()
            exchange.enableRateLimit = False
            clones.append(ExchangeClient(exchange, sandbox=self.sandbox, retry_budget_s=self.retry_budget_s,
                                         backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s,
                                         sleep=self._sleep, monotonic=self._monotonic, limiter=self.limiter))
        return clones

    def use_markets(self, markets: dict[str, Any]) -> None:
        """Markets known already (another instance's, or saved): no request to load them."""
        with self._lock:
            self.exchange.set_markets(markets)

    def call_once(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ccxt

        with self._lock:
            if self.limiter is not None:
                self.limiter.acquire()
            self.requests += 1
            try:
                return getattr(self.exchange, method)(*args, **kwargs)
            except ccxt.BaseError as exc:
                err = translate_error(exc, self.redact)
                err.ccxt_error = type(exc).__name__  # type: ignore[attr-defined]
        raise err

    def backoff(self, attempt: int, error: KernelError) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** (attempt - 1)))
        if getattr(error, "ccxt_error", "") in ("DDoSProtection", "RateLimitExceeded"):
            delay = min(self.max_backoff_s, delay * 2)  # the exchange asked us to slow down
        return delay

    def deadline(self, budget_s: float | None = None) -> float:
        return self._monotonic() + (self.retry_budget_s if budget_s is None else budget_s)

    def wait_before_retry(self, attempt: int, error: KernelError, deadline: float) -> None:
        """Sleep the backoff for ``attempt`` or, if that would pass ``deadline``, raise ``error``."""
        delay = self.backoff(attempt, error)
        if self._monotonic() + delay > deadline:
            raise error
        self.retries += 1
        log.warning("%s: %s; retry %d in %.2fs", self.id, error, attempt, delay)
        self._sleep(delay)

    def call(self, method: str, *args: Any, budget_s: float | None = None, **kwargs: Any) -> Any:
        deadline = self.deadline(budget_s)
        attempt = 0
        while True:
            try:
                return self.call_once(method, *args, **kwargs)
            except TemporaryError as exc:
                attempt += 1
                self.wait_before_retry(attempt, exc, deadline)
