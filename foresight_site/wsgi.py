"""WSGI entry point (gunicorn foresight_site.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foresight_site.settings")

application = get_wsgi_application()

from trading.checks import refuse_to_serve_on_errors  # noqa: E402 - needs the apps loaded above

refuse_to_serve_on_errors()  # gunicorn runs no system checks: an unsafe file stops it here
