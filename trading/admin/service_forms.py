"""Change forms whose save calls a service instead of saving the model."""
from __future__ import annotations

from .. import services
from .command_buttons import command_wait_s


class Refused(Exception):
    """A service refused what a change form asked for. Raised out of save_model so that the
    admin's transaction rolls back; the form is then shown again with the reasons on it."""

    def __init__(self, error: services.ServiceError) -> None:
        super().__init__(str(error))
        self.error = error


class RefusedFormMixin:
    refused: services.ServiceError | None = None

    def clean(self):
        cleaned = super().clean()
        placed = False
        for key, msg in self.refused.errors.items():
            field = key.split(".", 1)[0]  # "params.fast" belongs to params
            if field in self.fields:
                self.add_error(field, msg if key == field else f"{key}: {msg}")
                placed = True
        if not placed:
            self.add_error(None, str(self.refused))
        return cleaned


class ServiceSaveMixin:
    """A refusal (:class:`Refused`) becomes form errors, and the command a save issued
    (``request.admin_command``) is waited for once the transaction commits. Goes with
    :class:`~trading.admin.command_buttons.CommandButtonsMixin`, which reports it."""

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        refused = getattr(request, "admin_refused", None)
        if refused is not None:
            form = type(form.__name__, (RefusedFormMixin, form), {"refused": refused})
        return form

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            response = super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as refused:
            request.admin_refused = refused.error
            response = super().changeform_view(request, object_id, form_url, extra_context)
        command = getattr(request, "admin_command", None)
        if command is not None:
            # Committed and delivered only now: wait for the kernel's answer.
            command = services.command_wait(command=command, timeout_s=command_wait_s())
            self.report_command(request, command, getattr(request, "admin_command_label", str(command)))
        return response
