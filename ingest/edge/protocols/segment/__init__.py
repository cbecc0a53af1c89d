"""Segment's HTTP Tracking API (RudderStack speaks the same): /v1/batch and the single calls."""
