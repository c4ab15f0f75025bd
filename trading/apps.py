from django.apps import AppConfig


class TradingConfig(AppConfig):
    name = "trading"
    verbose_name = "Trading"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from . import signals
        from . import tasks  # noqa: F401 - registered here: the services enqueue them by name, and run them eagerly without a broker

        user_login_failed.connect(signals.audit_login_failed, dispatch_uid="trading.audit_login_failed")
