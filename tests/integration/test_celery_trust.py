"""Messages on Redis are not trusted, with real processes (tests/integration/celery_cluster.py):

- a forged message published straight to a host's queue (a path instead of a kernel, the
  halt message of old with its own reason and actor, a kernel the host does not run) is
  refused by the real worker, audited as "task.refused", and nothing is written;
- with message signing (FORESIGHT_CELERY_SIGNING_*: Celery's "auth" serializer, keys and
  certificates made here), the console's signed tasks are delivered, and a worker drops an
  unsigned message, and one signed by a certificate it does not trust, before any task runs.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.integration.celery_cluster import (  # noqa: F401 (fixtures)
    Cluster,
    cluster,
    console_db_template,
    host_kernels,
    redis_server,
)
from tests.integration.test_celery_redis import ISSUE, commands, setup_console, wait_status
from tests.support.status_reader import read_control
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEND = """
from celery import current_app
current_app.send_task(name, args=args, kwargs=kwargs, queue=queue)
"""

PENDING_ROW = """
from django.utils import timezone
from trading.models import ControlCommand, Kernel
row = ControlCommand.objects.create(command_id=command_id, kernel=Kernel.objects.get(name=kernel), action="pause",
                                    actor="olga", source="api", issued_at=timezone.now())
result = row.pk
"""


def refusals(cluster: Cluster) -> list[dict]:
    return cluster.rows("SELECT * FROM trading_auditevent WHERE action = 'task.refused' ORDER BY id")


def test_forged_messages_on_redis_are_refused_by_the_worker_audited_and_write_nothing(cluster, kernels, tmp_path):
    dir_a, dir_b, evil = tmp_path / "kernel-a", tmp_path / "kernel-b", tmp_path / "evil"
    kernels(dir_a)
    dir_b.mkdir()
    worker = cluster.worker("worker-a", "host-a,host-a.halt", FORESIGHT_HOST_KERNELS=host_kernels(alpha=dir_a))
    shell, _ = setup_console(cluster, [("alpha", dir_a, "host-a", ""), ("beta", dir_b, "host-b", "remote-b")])
    # beta's halt row exists (the console queued it on host-b.halt, which nobody consumes here).
    halt_id = shell.run("""
from trading import services
from trading.models import Kernel
result = services.halt_engage(kernel=Kernel.objects.get(name="beta"), actor=services.Actor.cli(), reason="real").command_id
""")
    forgeries = [
        ("trading.deliver_halt", [halt_id, str(evil), "forged", "mallory"], {}, "host-a.halt"),  # the old message
        ("trading.deliver_halt", [halt_id, "alpha"], {"by": "mallory"}, "host-a.halt"),
        ("trading.deliver_halt", [halt_id, "beta"], {}, "host-a.halt"),  # a real halt, not this host's kernel
        ("trading.deliver_command", [str(evil / "control.json")], {}, "host-a"),
        ("trading.sync_host_kernels", ["host-b"], {}, "host-a"),  # beta's sync, asked of host-a
    ]
    for name, args, kwargs, queue in forgeries:
        shell.run(SEND, name=name, args=args, kwargs=kwargs, queue=queue)

    events = wait_until(lambda: (lambda r: r if len(r) >= 5 else None)(refusals(cluster)), timeout=60,
                        what="the worker to refuse the five forged messages")
    assert {e["kernel_name"] for e in events} >= {"beta"}
    assert sum('"trading.deliver_halt"' in e["payload"] for e in events) == 3
    assert not evil.exists() and not (dir_b / "control.json").exists()
    assert not (read_control(dir_a) or {}).get("halt")  # alpha was never halted
    row = cluster.rows("SELECT status FROM trading_controlcommand WHERE command_id = ?", (halt_id,))[0]
    assert row["status"] == "pending"
    assert "refused" in worker.log()


def make_identity(root: Path, name: str) -> tuple[Path, Path]:
    """An RSA key and a self-signed certificate (PEM), as an operator makes one per process."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"foresight-{name}")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    root.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = root / f"{name}.key", root / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def signing_env(key: Path, cert: Path, trusted: Path) -> dict[str, str]:
    return {"FORESIGHT_CELERY_SIGNING_KEY": str(key), "FORESIGHT_CELERY_SIGNING_CERT": str(cert),
            "FORESIGHT_CELERY_TRUSTED_CERTS": str(trusted)}


def test_with_signing_only_signed_tasks_are_run(cluster, kernels, tmp_path):
    pki = tmp_path / "pki"
    trusted, untrusted = pki / "trusted", pki / "untrusted"
    console_key, console_cert = make_identity(pki / "console", "console")
    worker_key, worker_cert = make_identity(pki / "worker", "worker")
    mallory_key, mallory_cert = make_identity(pki / "mallory", "mallory")
    for store, certs in ((trusted, (console_cert, worker_cert)), (untrusted, (mallory_cert,))):
        store.mkdir()
        for cert in certs:
            (store / cert.name).write_bytes(cert.read_bytes())

    dir_a = tmp_path / "kernel-a"
    kernels(dir_a)
    worker = cluster.worker("worker-a", "host-a,host-a.halt", FORESIGHT_HOST_KERNELS=host_kernels(alpha=dir_a),
                            **signing_env(worker_key, worker_cert, trusted))
    shell, _ = setup_console(cluster, [("alpha", dir_a, "host-a", "")],
                             **signing_env(console_key, console_cert, trusted))

    [signed] = shell.run(ISSUE, commands=[("alpha", "pause", None)])
    wait_status(cluster, [signed], "delivered")  # the signed task was accepted and run by the worker

    unsigned = cluster.shell()  # someone with Redis, and no trusted key
    foreign = cluster.shell(**signing_env(mallory_key, mallory_cert, untrusted))
    pks = {}
    for sender, command_id in ((unsigned, "c-unsigned-1"), (foreign, "c-foreign-1")):
        pks[command_id] = shell.run(PENDING_ROW, command_id=command_id, kernel="alpha")
        sender.run(SEND, name="trading.deliver_command", args=[pks[command_id]], kwargs={}, queue="host-a")

    wait_until(lambda: worker.log().count("Refusing to deserialize untrusted content") >= 1
               and "Unknown certificate" in worker.log(), timeout=60,
               what="the worker to drop the unsigned and the foreign-signed message")
    rows = commands(cluster, list(pks))
    assert {r["status"] for r in rows.values()} == {"pending"}
    ids = [c["id"] for c in (read_control(dir_a) or {}).get("commands") or []]
    assert not set(pks) & set(ids)
    assert cluster.redis.llen("host-a") == 0  # consumed and dropped, not waiting for someone else
