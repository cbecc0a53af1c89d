"""Every adapter's endpoints, at the site root where its clients look for them."""

from .registry import PROTOCOL_MODULES

urlpatterns = [pattern for module in PROTOCOL_MODULES for pattern in module.urlpatterns]
