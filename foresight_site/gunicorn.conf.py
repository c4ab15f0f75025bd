"""gunicorn's settings for the console: ``gunicorn -c foresight_site/gunicorn.conf.py foresight_site.wsgi``.

The one place the web server's worker model is written down: the Procfile, the systemd unit of
docs/deployment.md and tests/integration/test_halt_not_starved.py all read this file.

Why threads (``gthread``), not sync workers: an API request with ``?wait=N`` holds its worker
while it waits for the kernel's answer. With three sync workers, three such requests left no
worker for an operator's HALT. Threaded workers serve ``workers × threads`` requests at once,
each wait is capped (``FORESIGHT_API_MAX_WAIT_S``, 5 s by default), and a halt answers as soon
as control.json is written. So a halt finds a free thread while all the others wait, and even
with every thread waiting it waits at most the cap.

``worker_connections`` equal to ``threads`` (set at start-up, whatever ``--threads`` says): a
gthread worker otherwise accepts up to 1,000 connections and queues those its threads cannot
take yet, even while another worker has threads free. With the two equal, a worker whose
threads are all busy stops accepting, and the next connection goes to a worker that can serve
it at once. The price is no HTTP keep-alive (gunicorn keeps a connection alive only in the room
above ``threads``): the proxy in front opens a connection per request, as nginx does by default
towards its upstream.

Processes for throughput, threads for waiting: a request's Python holds its worker's GIL, so a
CPU-bound read such as the status endpoint polled by dashboards scales with processes, not
threads. Three workers on the reference 2-core machine (cores + 1) keep both cores busy while
one waits on the database; the threads are for the waits above (docs/deployment.md).

Overrides: ``WEB_CONCURRENCY`` (workers), or gunicorn's own flags and ``GUNICORN_CMD_ARGS``
(``--threads 16``, ``--bind 0.0.0.0:8000``), which take precedence over this file.
"""
import os

from gunicorn.glogging import Logger

from foresight_site.log_format import gunicorn_logs_format, log_format_setting

bind = "127.0.0.1:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "").strip() or 3)
worker_class = "gthread"
threads = 8
worker_connections = threads
keepalive = 0  # see above: no room for idle connections beside the threads
# A gthread worker's main loop stays responsive while its threads wait: this is the
# heartbeat's timeout, not a limit on a request.
timeout = 60
graceful_timeout = 30


def on_starting(server):
    """Keep worker_connections equal to the threads a flag or GUNICORN_CMD_ARGS may have changed."""
    server.cfg.set("worker_connections", server.cfg.threads)


class FormatLogger(Logger):
    """gunicorn's own lines (from its first, "Starting gunicorn") in FORESIGHT_LOG_FORMAT
    (foresight_site/log_format.py)."""

    def setup(self, cfg):
        super().setup(cfg)
        gunicorn_logs_format(gunicorn_log=self, log_format=log_format_setting())


logger_class = FormatLogger
