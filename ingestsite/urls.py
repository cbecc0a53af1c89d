from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from ingest.edge import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("ingest.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.prometheus_metrics, name="metrics"),
    # Segment, PostHog, Snowplow and Confluent REST Proxy clients expect their own paths.
    path("", include("ingest.edge.protocols.urls")),
    # The admin's own CSS and JS, found in the installed apps; nothing comes from a CDN. Only
    # the admin loads these, so serving them from Django needs no collectstatic or web server.
    re_path(rf"^{settings.STATIC_URL.strip('/')}/(?P<path>.*)$", serve_static, {"insecure": True}),
]

handler404 = "ingest.edge.views.not_found"
handler500 = "ingest.edge.views.server_error"
