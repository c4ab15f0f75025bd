"""Django settings for running the kernel's management commands alone (runkernel, kernelctl).

The kernel needs no database and no console app: running ``manage.py runkernel`` with
these settings (``DJANGO_SETTINGS_MODULE=tests.integration.kernel_settings``) tests the
real command while the console's apps are out of the picture.
"""
import os
from pathlib import Path

SECRET_KEY = "kernel-integration-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["kernel"]
DATABASES: dict = {}
FORESIGHT_STATE_DIR = Path(os.environ.get("FORESIGHT_STATE_DIR", "").strip() or "/nonexistent-state-dir")
LOGGING_CONFIG = None  # runkernel configures logging itself
