"""A loopback HTTP server that receives notifications: a webhook endpoint, or a fake Telegram
Bot API (``POST /bot<token>/sendMessage``). It records every POST (path and JSON body) and
can answer the first ``fail_first`` of them with HTTP 500, as an endpoint that is down would."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class NotificationSink:
    def __init__(self, *, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []  # every POST: {"path", "body", "answered"}
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with sink._lock:
                    failing = len(sink.requests) < sink.fail_first
                    code = 500 if failing else 200
                    sink.requests.append({"path": self.path, "body": json.loads(raw or b"null"), "answered": code})
                body = b'{"ok": false}' if failing else b'{"ok": true}'
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "NotificationSink":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[dict[str, Any]]:
        """The bodies of the POSTs answered 200, in order."""
        with self._lock:
            return [r["body"] for r in self.requests if r["answered"] == 200]

    def texts(self) -> list[str]:
        return [b.get("text", "") for b in self.received() if isinstance(b, dict)]
