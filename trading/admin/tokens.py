"""API tokens in the admin: each console user creates their own (shown once) and revokes them."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from .. import services
from ..models import ApiToken


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what the token is for, e.g. 'grafana' or 'laptop cli'")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix_display", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    fields = ("name", "user", "prefix_display", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke_tokens",)

    # Like the API: every console user manages their own tokens (a viewer needs one to read
    # through the API too); view_apitoken shows everyone's, a superuser may revoke anyone's.

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser or request.user.has_perm("trading.view_apitoken"):
            return qs
        return qs.filter(user=request.user)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None or obj.user_id == request.user.pk:
            return self.has_module_permission(request)
        return super().has_view_permission(request, obj)

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

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiTokenCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            token, raw = services.token_create(user=request.user, name=form.cleaned_data["name"],
                                               actor=services.Actor.from_request(request, "admin"))
            self.message_user(
                request,
                format_html("API token “{}” created. Copy it now, it is not shown again: <code>{}</code>",
                            token.name, raw),
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
