"""``python manage.py verifyaudit``: check the audit log's hash chain.

Prints "N events, chain intact" (and the last hash: keep it somewhere else, so that a
rewrite that recomputed every hash is caught too), or names the first broken event and
exits non-zero (services/audit_chain.py).
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from trading import services


class Command(BaseCommand):
    help = "Verify the audit log's hash chain: the first broken event, or 'N events, chain intact'."

    def handle(self, *args, **options):
        check = services.audit_verify()
        if check.broken_id is not None:
            raise CommandError(f"audit chain broken at event #{check.broken_id}: {check.problem} "
                               f"({check.events} events before it hold)")
        self.stdout.write(f"{check.events} events, chain intact (last hash {check.last_hash})")
