"""Issue 13, item 7: redaction at the root — every log record is redacted as it is made, so a
handler added after start-up (a debugging StreamHandler, a library's own) writes no secret."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parents[2]


def test_a_handler_added_after_start_up_writes_no_secret():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    late = logging.getLogger("tests.added.late")  # a logger and handler Django's config never saw
    late.addHandler(handler)
    late.propagate = False
    try:
        token = "fst_0a1b2c3d_" + "S3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3c"
        late.warning("token %s from %s", token, "postgres://foresight:hunter2-pw@db:5432/foresight")
        late.warning("Authorization: Bearer %s", "abc.def-ghi")
        try:
            raise RuntimeError(f"signing failed with key {settings.SECRET_KEY}")
        except RuntimeError:
            late.exception("it broke")
    finally:
        late.removeHandler(handler)
    text = out.getvalue()
    for secret in ("S3cr3tS3cr3t", "hunter2-pw", "abc.def-ghi", settings.SECRET_KEY):
        assert secret not in text, secret
    assert "token fst_0a1b2c3d_[redacted]" in text  # the public prefix stays, to tell tokens apart
    assert "postgres://foresight:[redacted]@db:5432" in text and "Bearer [redacted]" in text
    assert "RuntimeError: signing failed with key [redacted]" in text  # the traceback too


LATE_HANDLER = """
import logging, sys, django
django.setup()
log = logging.getLogger("someone.elses")
log.addHandler(logging.StreamHandler(sys.stdout))
log.propagate = False
log.error("spool key is %s, redis at %s", "spool-hmac-key-0123456789", "redis://:redis-pw-987@cache:6379/0")
"""


def test_secrets_from_the_environment_are_redacted_in_a_fresh_console_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env.update(DJANGO_SETTINGS_MODULE="foresight_site.settings", FORESIGHT_AUDIT_HMAC_KEY="spool-hmac-key-0123456789",
               DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", REDIS_URL="redis://:redis-pw-987@cache:6379/0")
    done = subprocess.run([sys.executable, "-c", LATE_HANDLER], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "spool-hmac-key-0123456789" not in done.stdout and "redis-pw-987" not in done.stdout
    assert done.stdout.strip() == "spool key is [redacted], redis at redis://:[redacted]@cache:6379/0"
