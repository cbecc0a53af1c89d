"""Why the pipeline refuses a request; ingest/edge/errors.py says how each is answered."""


class PipelineUnavailable(Exception):
    """The pipeline cannot take events now; nothing of the request was accepted."""


class Overloaded(PipelineUnavailable):
    """The batcher holds as many events or bytes as it may; the caller should shed load."""


class ShuttingDown(PipelineUnavailable):
    """The gateway is stopping and takes no new events."""


class Backlogged(PipelineUnavailable):
    """More batches wait in the broker for Kafka than the high-water mark allows."""


class BrokerUnavailable(PipelineUnavailable):
    """The broker cannot be reached, did not confirm the batch in time, or refused it."""


class InvalidAckLevel(ValueError):
    """The request asked for an ack level the gateway does not know."""
