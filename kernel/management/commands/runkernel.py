"""``python manage.py runkernel --state-dir DIR``: build a kernel, run it until SIGTERM/SIGINT.

Thin over kernel/cli.py (the same options, checks and run as ``python -m kernel``); only
what needs Django is here: the default state dir from the settings, and Django's way of
reporting a refusal (CommandError).
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kernel import cli
from kernel.errors import OperationalError


class Command(BaseCommand):
    help = cli.DESCRIPTION

    def add_arguments(self, parser):
        cli.add_kernel_arguments(parser)

    def handle(self, *args, **opts):
        state_dir = Path(opts["state_dir"] or settings.FORESIGHT_STATE_DIR)
        try:
            kernel = cli.kernel_build(opts=opts, state_dir=state_dir)
        except (cli.BadOption, OperationalError) as exc:
            raise CommandError(str(exc)) from None
        cli.kernel_serve(kernel=kernel, say=self.stderr.write)
