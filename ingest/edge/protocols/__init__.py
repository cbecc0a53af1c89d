"""Adapters for the protocols existing clients speak: Segment, PostHog, Snowplow, Confluent.

An adapter is a package here whose `views` module has a `PROTOCOL` (base.Protocol) and
`urlpatterns`, listed in registry.py; its parsing, error shapes and OpenAPI paths are modules
beside it. It turns its protocol's body into records.Event values and hands them to
pipeline.accept.accept_events, as edge/views.py does for the native API: keys and topics through
control.keys and base.source_topic, the body through edge.bodies. Its views use
base.protocol_view, so every domain error is answered in the protocol's own shape.
"""
