"""One module per real client SDK: `PROTOCOL` and `send(*, url, key, ids, timeout_s)`.

`send` sends one event per id through the SDK (the id is the event id of its protocol), flushes,
and returns once the SDK has nothing left to send; it raises AssertionError if the SDK gave up
on an event. tests/protocols/test_outage.py drives every driver at once through an outage.
"""
