"""The notification channels: where a message can go (settings.FORESIGHT_NOTIFY), and one
try of sending it there. Each raises DeliveryFailed with a reason that never holds a secret
(a webhook URL's path, a bot token): those reasons go into the audit log.

HTTP is ``requests`` (already installed with ccxt, declared in pyproject.toml): per-request
timeouts, status codes and connection errors as types; urllib would need the same by hand.
One try per call: retries are scheduled by services/notifications.py, never slept here, so a
sync loop or a worker never waits out a backoff.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import send_mail


class DeliveryFailed(Exception):
    """One try failed; the message is safe to audit."""


@dataclass(frozen=True)
class Target:
    channel: str  # webhook | email | telegram
    id: str  # stable, secret-free: a hash of the address
    label: str  # for humans and the audit log: no secret
    address: str  # the URL, chat id or recipients: may be secret, never stored


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def notify_settings() -> dict[str, Any]:
    return getattr(settings, "FORESIGHT_NOTIFY", None) or {}


def notification_targets() -> list[Target]:
    """Every configured target, in a stable order."""
    cfg = notify_settings()
    targets = [Target("webhook", _digest("webhook", url), f"webhook {urlsplit(url).netloc}", url)
               for url in cfg.get("webhooks") or []]
    recipients = list(cfg.get("email_to") or [])
    if recipients:
        targets.append(Target("email", _digest("email", *recipients), f"email to {len(recipients)} recipient(s)",
                              ",".join(recipients)))
    token = cfg.get("telegram_token") or ""
    for chat in cfg.get("telegram_chats") or []:
        targets.append(Target("telegram", _digest("telegram", token, chat), f"telegram chat {chat}", chat))
    return targets


def _post(url: str, body: dict, *, what: str, secret: str = "") -> None:
    timeout = float(notify_settings().get("timeout_s") or 5.0)
    try:
        response = requests.post(url, json=body, timeout=timeout)
    except requests.RequestException as exc:
        # requests names the URL in its errors: the reason says only the exception's type.
        raise DeliveryFailed(f"{what}: {type(exc).__name__}") from None
    if response.status_code >= 300:
        detail = response.text[:200].replace(secret, "***") if secret else response.text[:200]
        raise DeliveryFailed(f"{what}: HTTP {response.status_code} {detail}".strip())


def send_to(target: Target, *, text: str, subject: str, fields: dict[str, Any]) -> None:
    """One try of one message to one target; DeliveryFailed when it did not arrive."""
    cfg = notify_settings()
    if target.channel == "webhook":
        _post(target.address, {"text": text, **fields}, what=target.label)
    elif target.channel == "telegram":
        token = cfg.get("telegram_token") or ""
        _post(f"{cfg.get('telegram_api')}/bot{token}/sendMessage",
              {"chat_id": target.address, "text": text, "disable_web_page_preview": True},
              what=target.label, secret=token)
    elif target.channel == "email":
        try:
            send_mail(subject, text, cfg.get("email_from"), target.address.split(","), fail_silently=False)
        except Exception as exc:  # noqa: BLE001 - smtplib and sockets raise many types
            raise DeliveryFailed(f"{target.label}: {type(exc).__name__}: {exc}"[:300]) from None
    else:
        raise DeliveryFailed(f"unknown channel {target.channel!r}")
