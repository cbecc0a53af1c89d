"""The one map from the domain's exceptions to the API's answers (ingest/edge/errors.py)."""

import pytest

from ingest.control.keys import SourcesUnavailable, TopicForbidden, Unauthorized
from ingest.control.ratelimit import RateLimited
from ingest.control.receipts import ReceiptNotFound
from ingest.edge.errors import DOMAIN_ERRORS, ApiError, api_error
from ingest.pipeline.errors import (
    Backlogged,
    BrokerUnavailable,
    InvalidAckLevel,
    Overloaded,
    ShuttingDown,
)


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (Unauthorized("no key"), 401, "unauthorized", None),
        (TopicForbidden("not yours"), 403, "forbidden_topic", None),
        (ReceiptNotFound("bad signature"), 404, "not_found", None),
        (InvalidAckLevel("ack must be one of ..."), 400, "invalid_ack", None),
        (RateLimited("over", retry_after=4), 429, "rate_limited", 4),
        (SourcesUnavailable("no table"), 503, "unavailable", 7),
        (Overloaded("full"), 503, "overloaded", 7),
        (Backlogged("deep"), 503, "backlogged", 7),
        (BrokerUnavailable("away"), 503, "unavailable", 7),
        (ShuttingDown("stopping"), 503, "unavailable", 7),
    ],
)
def test_each_domain_error_has_one_answer(settings, error, status, code, retry_after):
    settings.INGEST_RETRY_AFTER_S = 7
    answer = api_error(error)
    assert (answer.status, answer.code, answer.retry_after) == (status, code, retry_after)
    assert isinstance(error, DOMAIN_ERRORS)


def test_a_receipt_refusal_does_not_say_why():
    assert api_error(ReceiptNotFound("not signed for this source")).message == "no such receipt"


def test_an_api_error_is_its_own_answer():
    error = ApiError(413, "body_too_large", "too big")
    assert api_error(error) is error


def test_an_unknown_exception_has_no_answer():
    with pytest.raises(TypeError):
        api_error(KeyError("x"))
