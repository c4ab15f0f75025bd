from django.apps import AppConfig


class TradingConfig(AppConfig):
    name = "trading"
    verbose_name = "Trading"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out
        from django.contrib.auth.signals import user_login_failed

        from . import checks  # noqa: F401 - registers the system checks (files private to the service user)
        from . import signals
        from . import tasks  # noqa: F401 - registered here: the services enqueue them by name, and run them eagerly without a broker

        user_login_failed.connect(signals.count_login_failed, dispatch_uid="trading.count_login_failed")
        user_locked_out.connect(signals.audit_locked_out, dispatch_uid="trading.audit_locked_out")
