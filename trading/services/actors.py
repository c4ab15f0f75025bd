"""Who does something: a console user, the OS user of a shell, the system, or a kernel."""
from __future__ import annotations

import os
import pwd
import socket
from dataclasses import dataclass
from typing import Any

from ..client_ip import clean_ip, client_ip


@dataclass(frozen=True)
class Actor:
    """Who does something: a console user, the OS user of a shell, or the system."""

    name: str  # username, or "user@host" for the CLI, or "system"
    source: str  # "admin" | "api" | "cli" | "system" (and "kernel" for outcomes)
    user: Any = None  # a User; None for the CLI/system (trusted: shell access to the state dir)
    ip: str | None = None
    token: str = ""  # the API token that acted, "name (prefix…)"; empty for a session, the CLI, the system

    @classmethod
    def from_request(cls, request, source: str) -> "Actor":
        user = getattr(request, "auth", None)
        if user is None or not getattr(user, "is_authenticated", False):
            user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            user = None
        name = user.get_username() if user is not None else "anonymous"
        token = getattr(user, "api_token", None)  # set by services.tokens.token_verify for a bearer token
        return cls(name=name, source=source, user=user, ip=clean_ip(client_ip(request)),  # behind a trusted proxy: the client
                   token=f"{token.name} ({token.prefix}…)" if token is not None else "")

    @classmethod
    def cli(cls) -> "Actor":
        """The OS user of this shell, from the process's real uid (its passwd entry), never from
        $LOGNAME or $USER, which anyone can set: ``user@host``."""
        uid = os.getuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:  # no passwd entry (some containers): the uid itself
            user = f"uid-{uid}"
        return cls(name=f"{user}@{socket.gethostname()}", source="cli")

    @classmethod
    def system(cls) -> "Actor":
        return cls(name="system", source="system")

    @classmethod
    def for_kernel(cls, kernel_name: str) -> "Actor":
        return cls(name=f"kernel:{kernel_name}", source="kernel")
