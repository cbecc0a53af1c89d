"""The gateway's URLs plus the designs the benchmark compares it with."""

from django.urls import path

from ingestsite.urls import handler404, handler500
from ingestsite.urls import urlpatterns as gateway_urlpatterns

from . import views

urlpatterns = [
    *gateway_urlpatterns,
    path("bench/bare/<str:topic>", views.bare, name="bench-bare"),
    path("bench/delay/<str:topic>", views.delay_per_request, name="bench-delay"),
    path("bench/fire/<str:topic>", views.fire_and_forget, name="bench-fire"),
]

__all__ = ("urlpatterns", "handler404", "handler500")
