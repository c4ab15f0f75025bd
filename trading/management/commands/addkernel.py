"""``python manage.py addkernel --name N --state-dir D [--host H --queue Q]``: register a kernel."""
from django.core.management.base import BaseCommand, CommandError

from trading import services


class Command(BaseCommand):
    help = "Register a kernel with the console (idempotent); syncs its status when status.json is readable."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="the kernel's name in the console (a slug)")
        parser.add_argument("--state-dir", required=True, help="the kernel's state dir on its host")
        parser.add_argument("--host", default="", help="host the kernel runs on; empty = this machine")
        parser.add_argument("--queue", default="", help="Celery queue of that host's worker; empty = local")

    def handle(self, *args, **o):
        try:
            kernel = services.kernel_register(name=o["name"], state_dir=o["state_dir"], host=o["host"],
                                              queue=o["queue"])
        except services.ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"kernel {kernel.name}: {kernel.state_dir} (state {kernel.state})")
