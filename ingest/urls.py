from django.urls import path

from .edge import views

urlpatterns = [
    path("events/<str:topic>", views.post_events, name="post-events"),
    path("show/", views.show, name="show"),
    path("receipts/<str:receipt_id>", views.receipt, name="receipt"),
    path("openapi.json", views.openapi_document, name="openapi"),
]
