"""Snowplow's tracker protocol: the tp2 POST envelope and the /i pixel."""
