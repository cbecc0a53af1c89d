"""Confluent REST Proxy v2 and v3: produce with offsets per record, and v3's one cluster."""
