"""WSGI entry point (gunicorn foresight_site.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foresight_site.settings")

application = get_wsgi_application()
