"""The operators' console in the Django admin, one module per model.

Every button is a POST view added through ``get_urls()``: it translates the request into one
service call, waits a moment for the kernel's answer, reports it with ``message_user`` and
redirects. GET pages never write: they show the mirror, synced only when status.json moved
(``services.status_sync_if_stale``). No business logic lives here.

Django's admin autodiscovery imports this package: importing the modules below registers
every ModelAdmin.
"""
from django.contrib import admin

from .audit import AuditEventAdmin
from .commands import ControlCommandAdmin
from .kernels import KernelAdmin
from .slots import SlotAdmin
from .tokens import ApiTokenAdmin

admin.site.site_header = "Foresight console"
admin.site.site_title = "Foresight"
admin.site.index_title = "Kernels, slots and the audit log"

__all__ = ["ApiTokenAdmin", "AuditEventAdmin", "ControlCommandAdmin", "KernelAdmin", "SlotAdmin"]
