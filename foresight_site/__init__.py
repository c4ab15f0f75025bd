"""Foresight's Django project: settings, urls, the Ninja API and the Celery app."""

# Load the Celery app whenever Django starts, so @shared_task binds to it (Celery's Django guide).
from .celery import app as celery_app

__all__ = ("celery_app",)
