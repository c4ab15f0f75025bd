"""Free TCP ports on the loopback interface, for servers the tests and benchmarks start."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now. Another process may take it before ours binds it; on a
    test machine that is rare enough that the servers' own start-up errors are the check."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
