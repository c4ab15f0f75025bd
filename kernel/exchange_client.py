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
) -> Any:
    """A configured ccxt exchange: rate limiting on, verbose off, spot markets only,
    sandbox URLs when asked (refused if the exchange has none). Makes no request."""
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
    if sandbox:
        if not exchange.urls.get("test"):
            raise OperationalError(f"{exchange_id} has no sandbox (test) URLs in ccxt")
        exchange.set_sandbox_mode(True)
    return exchange


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
    ) -> None:
        self.exchange = exchange
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

    def call_once(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ccxt

        with self._lock:
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
