"""The console: Django models, services, admin, API and Celery tasks around the kernel."""
