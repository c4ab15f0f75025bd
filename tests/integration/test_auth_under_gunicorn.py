"""Issue 13, item 4, against the real console: gunicorn with the documented worker settings
(foresight_site/gunicorn.conf.py, several worker processes) behind a trusted proxy address,
real Redis for the throttle counts. The lockout and the bad-token brake are counted in the
database and the call throttle in Redis, so every worker process sees the same counts."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.integration.celery_cluster import RedisServer
from tests.support.console_process import ConsoleProcess, console_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "the-right-password-42"
SETUP = f"""
from django.contrib.auth.models import User
from trading import services
User.objects.create_user("olga", password={PASSWORD!r}, is_staff=True)
print(services.token_create(user=User.objects.create_user("bot"), name="script")[1])
"""


class Console(ConsoleProcess):
    """The console under the documented gunicorn, behind a trusted proxy, its throttle in Redis."""

    def __init__(self, root: Path, redis_url: str) -> None:
        env = console_env(database_url=f"sqlite:///{root / 'var' / 'console.sqlite3'}", REDIS_URL=redis_url,
                          FORESIGHT_AUDIT_SPOOL=str(root / "var" / "audit-spool.jsonl"),
                          FORESIGHT_TRUSTED_PROXIES="127.0.0.1", FORESIGHT_API_RATE="10/m",
                          FORESIGHT_BAD_TOKEN_LIMIT="5")
        super().__init__(root, env, timeout=120)

    def start(self) -> str:
        self.manage("migrate", "--noinput", "-v0")
        token = self.manage("shell", "-c", SETUP).stdout.strip().splitlines()[-1]
        self.start_gunicorn(timeout=90)
        return token

    def rows(self, sql: str) -> list[tuple]:
        code = f"import json; from django.db import connection; c = connection.cursor(); c.execute({sql!r}); " \
               "print(json.dumps(c.fetchall(), default=str))"
        return [tuple(r) for r in json.loads(self.manage("shell", "-c", code).stdout.strip().splitlines()[-1])]

    def login(self, password: str, client_ip: str) -> requests.Response:
        """The admin's login form, as a browser behind the proxy sends it."""
        session = requests.Session()
        headers = {"X-Forwarded-For": client_ip}
        form = session.get(self.base_url + "/admin/login/", headers=headers, timeout=30)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        return session.post(self.base_url + "/admin/login/?next=/admin/", headers=headers, allow_redirects=False,
                            data={"username": "olga", "password": password, "csrfmiddlewaretoken": csrf}, timeout=30)


@pytest.fixture
def console(tmp_path) -> Iterator[tuple[Console, RedisServer]]:
    server = RedisServer(tmp_path / "redis").start()
    c = Console(tmp_path, server.url)
    try:
        yield c, server
    finally:
        c.stop()
        server.kill()


def test_lockout_brake_and_throttle_hold_across_gunicorn_workers(console):
    c, server = console
    token = c.start()

    # 40 wrong passwords from one client through the proxy, then the right one: refused.
    for i in range(40):
        assert c.login(f"guess-{i}", client_ip="203.0.113.7").status_code in (200, 429)
    assert c.login(PASSWORD, client_ip="203.0.113.7").status_code == 429
    assert c.login(PASSWORD, client_ip="198.51.100.20").status_code == 302  # another client gets in
    assert c.rows("SELECT ip_address, username FROM axes_accessattempt") == [("203.0.113.7", "olga")]
    assert c.rows("SELECT source, count FROM trading_authfailure WHERE kind = 'login'") == [("203.0.113.7", 41)]
    assert c.rows("SELECT ip FROM trading_auditevent WHERE action = 'login.locked_out'") == [("203.0.113.7",)]

    # Bad tokens: 5 refused with 401, then 429 for every bearer token from that client.
    bad = [requests.get(c.base_url + "/api/tokens", headers={"Authorization": f"Bearer fst_deadbeef_guess{i}",
                                                              "X-Forwarded-For": "192.0.2.9"}, timeout=30)
           for i in range(12)]
    assert [r.status_code for r in bad] == [401] * 5 + [429] * 7
    assert all(r.headers["Content-Type"].startswith("application/json") for r in bad)

    # The token's calls: 10 a minute, counted in Redis whichever worker answers.
    codes = [requests.get(c.base_url + "/api/tokens", headers={"Authorization": f"Bearer {token}"},
                          timeout=30).status_code for _ in range(25)]
    assert codes == [200] * 10 + [429] * 15
    [key] = [k for k in redis.Redis(port=server.port).keys("*throttle_auth_token-*")]
    prefix, secret = "_".join(token.split("_", 2)[:2]), token.split("_", 2)[2]
    assert key.endswith(prefix.encode()) and secret.encode() not in key  # the public prefix, never the secret
