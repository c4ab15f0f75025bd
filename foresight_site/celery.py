"""The Celery app: configured from Django settings (the CELERY_* names, themselves read from
the environment), tasks from each app's tasks.py (trading/tasks.py).

With REDIS_URL empty the broker is ``memory://`` and every task runs eagerly in the calling
process, so the console works alone. With REDIS_URL set:

    celery -A foresight_site worker -Q console                   # the console host
    celery -A foresight_site worker -Q host-a,host-a.halt -c 2   # each kernel host: its queue
    celery -A foresight_site beat                                # exactly one, anywhere

With FORESIGHT_CELERY_SIGNING_KEY/_CERT/TRUSTED_CERTS, every process signs the tasks it
sends and accepts only signed ones (Celery's message signing, ``app.setup_security``).

docs/deployment.md has the whole layout (routing per host, Redis persistence, timeouts, signing).
"""
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from foresight_site.log_format import worker_handlers_format

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foresight_site.settings")

app = Celery("foresight")
app.config_from_object("django.conf:settings", namespace="CELERY")
if app.conf.task_serializer == "auth":  # FORESIGHT_CELERY_SIGNING_* set (settings)
    # Signed JSON bodies only: every other serializer (pickle, yaml...) is disabled.
    app.setup_security(allowed_serializers=["json"], serializer="json")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _worker_log_format(logger=None, **_) -> None:
    """A worker's lines in FORESIGHT_LOG_FORMAT, with the command filter (foresight_site/log_format.py)."""
    from django.conf import settings  # configured by now: celery sets up logging after django.setup()

    worker_handlers_format(logger=logger, log_format=getattr(settings, "LOG_FORMAT", "text"))
