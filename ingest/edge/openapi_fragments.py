"""OpenAPI pieces every API description shares: an answer with its body and its Retry-After."""

RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def answer(
    description: str,
    *,
    schema: dict,
    media_type: str = "application/json",
    retry_after: bool = False,
) -> dict:
    """Return an OpenAPI response with its body's schema, and Retry-After where it is sent."""
    response = {"description": description, "content": {media_type: {"schema": schema}}}
    if retry_after:
        response["headers"] = RETRY_AFTER_HEADER
    return response
