"""``python manage.py setuproles``: (re)create the Viewer, Operator and Risk groups."""
from django.core.management.base import BaseCommand

from trading import services


class Command(BaseCommand):
    help = "Create or reset the groups Viewer, Operator and Risk with exactly their permissions."

    def handle(self, *args, **options):
        services.roles_setup()
        for role, perms in services.role_permissions().items():
            self.stdout.write(f"{role}: {', '.join(perms)}")
