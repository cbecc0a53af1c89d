"""Where protocol adapters go: Segment, PostHog, Snowplow and Confluent's REST Proxy.

An adapter is a module here with its own views, added to ingest/urls.py. It turns its protocol's
body into records.Event values, and hands them to the pipeline the way ingest/edge/views.py
does: control.keys.authenticate and authorize_topic for the source, pipeline.accept.admit_request
before the body is read, pipeline.accept.accept_events after it is parsed. It raises domain
exceptions (or edge.errors.ApiError for what is wrong with the request itself) and lets
edge.errors.api_error answer them, so every protocol refuses with the same statuses and codes.
"""
