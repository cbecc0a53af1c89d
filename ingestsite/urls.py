from django.contrib import admin
from django.urls import include, path

from ingest import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("ingest.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.prometheus_metrics, name="metrics"),
]

handler404 = "ingest.views.not_found"
handler500 = "ingest.views.server_error"
