from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from .api import api
from .metrics import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; who may scrape: foresight_site/metrics.py
]
