"""The workers' task request: Celery's, without decoding each message twice."""

from celery.worker.request import Request


class DecodedRequest(Request):
    """Celery's Request, handing the pool the body it already decoded.

    The consumer decodes every message to build its request, then gives the pool the raw body to
    decode once more (what a prefork child needs, not a thread): the second decode of a batch's
    records was the largest share of a thread worker's CPU per record after the produce itself.
    """

    __slots__ = ()

    @property
    def body(self):
        return self._payload

    @property
    def content_type(self):
        return None

    @property
    def content_encoding(self):
        return None
