"""API tokens in the admin: each console user creates their own (shown once, with an expiry)
and revokes them. Only a superuser sees other users' tokens."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from .. import services
from ..models import ApiToken


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what the token is for, e.g. 'grafana' or 'laptop cli'")
    expires_in_days = forms.IntegerField(min_value=1, required=False, label="Expires in (days)")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["expires_in_days"]
        field.initial = settings.FORESIGHT_TOKEN_DEFAULT_DAYS
        field.max_value = settings.FORESIGHT_TOKEN_MAX_DAYS
        field.validators.append(MaxValueValidator(settings.FORESIGHT_TOKEN_MAX_DAYS))
        field.help_text = (f"default {settings.FORESIGHT_TOKEN_DEFAULT_DAYS}, at most "
                           f"{settings.FORESIGHT_TOKEN_MAX_DAYS}; the token stops working then")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix_display", "created_at", "expires_display", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    fields = ("name", "user", "prefix_display", "created_at", "expires_display", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke_tokens",)

    # Like the API: every console user manages their own tokens (a viewer needs one to read
    # through the API too) and sees only those; a superuser sees and may revoke anyone's.
    # view_apitoken (every role has it) does not open other users' tokens: their names and
    # prefixes tell who scripts what, and from where.

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(user=request.user)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None or obj.user_id == request.user.pk or request.user.is_superuser:
            return self.has_module_permission(request)
        return False

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, never deleted: the audit log names them

    def has_revoke_permission(self, request):
        return self.has_module_permission(request)  # token_revoke checks whose token it is

    @admin.display(description="prefix")
    def prefix_display(self, obj: ApiToken):
        return f"{obj.prefix}…"

    @admin.display(description="expires", ordering="expires_at")
    def expires_display(self, obj: ApiToken):
        when = date_format(timezone.localtime(obj.expires_at), "DATETIME_FORMAT")
        if obj.is_expired():
            return format_html('<span class="fs-bad">expired {}</span>', when)
        return when

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiTokenCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            token, raw = services.token_create(user=request.user, name=form.cleaned_data["name"],
                                               expires_in_days=form.cleaned_data["expires_in_days"],
                                               actor=services.Actor.from_request(request, "admin"))
            self.message_user(
                request,
                format_html("API token “{}” created; it expires on {}. Copy it now, it is not shown again: "
                            "<code>{}</code>", token.name,
                            date_format(timezone.localtime(token.expires_at), "DATETIME_FORMAT"), raw),
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:trading_apitoken_changelist"))
        return TemplateResponse(request, "admin/trading/apitoken/add_form.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Create an API token for yourself",
            "form": form,
            "has_view_permission": self.has_view_permission(request),
        })

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request, queryset):
        done = services.tokens_revoke(tokens=queryset, actor=services.Actor.from_request(request, "admin"))
        for token, exc in done.refused:
            self.message_user(request, f"Token {token.name}: {exc}", messages.ERROR)
        revoked = len(done.revoked)
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS if revoked else messages.INFO)
