"""The Celery app: configured from Django settings (the CELERY_* names, themselves read from
the environment), tasks from each app's tasks.py (trading/tasks.py).

With REDIS_URL empty the broker is ``memory://`` and every task runs eagerly in the calling
process, so the console works alone. With REDIS_URL set:

    celery -A foresight_site worker -Q console                   # the console host
    celery -A foresight_site worker -Q host-a,host-a.halt -c 2   # each kernel host: its queue
    celery -A foresight_site beat                                # exactly one, anywhere

docs/deployment.md has the whole layout (routing per host, Redis persistence, timeouts).
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foresight_site.settings")

app = Celery("foresight")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
