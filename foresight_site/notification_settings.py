"""Notifications' settings, read from the environment (docs/operations.md, "Notifications").

    FORESIGHT_NOTIFY_WEBHOOK_URLS       comma or space list of webhook URLs (Slack-compatible JSON
                                        {"text": ...} plus structured fields); default none
    FORESIGHT_NOTIFY_EMAIL_TO           comma list of recipients (Django's mail framework); default none
    FORESIGHT_NOTIFY_EMAIL_FROM         the sender; default foresight@<hostname>
    FORESIGHT_EMAIL_HOST, _PORT, _USER, _PASSWORD, _USE_TLS, _USE_SSL
                                        the SMTP server (Django's EMAIL_*); default localhost:25
    FORESIGHT_NOTIFY_TELEGRAM_TOKEN     a Telegram bot's token; with _CHAT_IDS (comma list)
    FORESIGHT_NOTIFY_TELEGRAM_CHAT_IDS
    FORESIGHT_NOTIFY_TELEGRAM_API       the Bot API's base URL; default https://api.telegram.org
    FORESIGHT_NOTIFY_TIMEOUT_S          one delivery's timeout; default 5
    FORESIGHT_NOTIFY_PER_MINUTE         deliveries per channel per minute (more wait); default 20
    FORESIGHT_NOTIFY_MAX_ATTEMPTS       tries per delivery before it is given up; default 8
    FORESIGHT_NOTIFY_RETRY_S            the first retry's delay, doubled each time; default 2
    FORESIGHT_NOTIFY_RETRY_MAX_S        the longest delay between two tries; default 300
    FORESIGHT_STALE_LOG_EVERY_S         a silent kernel is logged at ERROR once, then at most this
                                        often; default 300
"""
from __future__ import annotations

import os
import re
import socket
from typing import Any, Mapping

from django.core.exceptions import ImproperlyConfigured

TELEGRAM_API = "https://api.telegram.org"


def _list(raw: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", raw.strip()) if item]


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def notification_settings(*, console_queue: str, beat_schedule: dict, task_routes: dict,
                          env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The settings notifications add: FORESIGHT_NOTIFY (the channels and their limits), Django's
    EMAIL_*, and the Celery beat entry and route of the sending task (console's queue)."""
    webhooks = _list(env.get("FORESIGHT_NOTIFY_WEBHOOK_URLS", ""))
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured("FORESIGHT_NOTIFY_WEBHOOK_URLS: each URL must start with http:// or https://")
    token = env.get("FORESIGHT_NOTIFY_TELEGRAM_TOKEN", "").strip()
    chats = _list(env.get("FORESIGHT_NOTIFY_TELEGRAM_CHAT_IDS", ""))
    if bool(token) != bool(chats):
        raise ImproperlyConfigured("FORESIGHT_NOTIFY_TELEGRAM_TOKEN and FORESIGHT_NOTIFY_TELEGRAM_CHAT_IDS go together")
    timeout = _number(env, "FORESIGHT_NOTIFY_TIMEOUT_S", 5.0, minimum=0.1)
    notify = {
        "webhooks": webhooks,
        "email_to": _list(env.get("FORESIGHT_NOTIFY_EMAIL_TO", "")),
        "email_from": env.get("FORESIGHT_NOTIFY_EMAIL_FROM", "").strip() or f"foresight@{socket.gethostname()}",
        "telegram_token": token,
        "telegram_chats": chats,
        "telegram_api": (env.get("FORESIGHT_NOTIFY_TELEGRAM_API", "").strip() or TELEGRAM_API).rstrip("/"),
        "timeout_s": timeout,
        "per_minute": int(_number(env, "FORESIGHT_NOTIFY_PER_MINUTE", 20, minimum=1)),
        "max_attempts": int(_number(env, "FORESIGHT_NOTIFY_MAX_ATTEMPTS", 8, minimum=1)),
        "retry_s": _number(env, "FORESIGHT_NOTIFY_RETRY_S", 2.0, minimum=0.0),
        "retry_max_s": _number(env, "FORESIGHT_NOTIFY_RETRY_MAX_S", 300.0, minimum=0.0),
    }
    every = 2.0
    return {
        "FORESIGHT_NOTIFY": notify,
        "FORESIGHT_STALE_LOG_EVERY_S": _number(env, "FORESIGHT_STALE_LOG_EVERY_S", 300.0, minimum=0.0),
        "EMAIL_HOST": env.get("FORESIGHT_EMAIL_HOST", "").strip() or "localhost",
        "EMAIL_PORT": int(_number(env, "FORESIGHT_EMAIL_PORT", 25, minimum=1)),
        "EMAIL_HOST_USER": env.get("FORESIGHT_EMAIL_USER", "").strip(),
        "EMAIL_HOST_PASSWORD": env.get("FORESIGHT_EMAIL_PASSWORD", ""),
        "EMAIL_USE_TLS": _flag(env, "FORESIGHT_EMAIL_USE_TLS"),
        "EMAIL_USE_SSL": _flag(env, "FORESIGHT_EMAIL_USE_SSL"),
        "EMAIL_TIMEOUT": timeout,
        "CELERY_TASK_ROUTES": {**task_routes, "trading.send_notifications": {"queue": console_queue}},
        "CELERY_BEAT_SCHEDULE": {**beat_schedule, "send-notifications": {
            "task": "trading.send_notifications", "schedule": every,
            "options": {"queue": console_queue, "expires": 5 * every},
        }},
    }
