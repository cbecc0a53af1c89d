"""Say why a body strict JSON refused is wrong: the event and field a lenient parser finds, or
that it is not JSON at all."""

import json
import math

from .errors import ApiError, bad_request


def rejection(document: bytes, error: Exception, *, index: int | None = None) -> ApiError:
    """Name the event and field that make a body lenient-only JSON, or call it malformed.

    `index` is the event's when `document` is one event; otherwise a top-level array's
    elements are events, and a top-level object is event 0.
    """
    problem = None
    try:
        lenient = json.loads(document)
        if index is None and isinstance(lenient, dict) and set(lenient) == {"events"}:
            lenient = lenient["events"]
        if isinstance(lenient, list) and index is None:
            for position, event in enumerate(lenient):
                if problem := _find_unencodable(event, path=""):
                    index = position
                    break
        else:
            problem = _find_unencodable(lenient, path="")
    except (ValueError, RecursionError):
        pass  # not JSON even to a lenient parser
    if problem is None:
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        return bad_request(f"body is not valid JSON: {reason}", code="invalid_json")
    return bad_request(
        f"event {index or 0}: {problem}; events must be strict UTF-8 JSON (RFC 8259)"
    )


def _find_unencodable(value, *, path: str) -> str | None:
    label = f'"{path}"' if path else "the event"
    if isinstance(value, str):
        return _surrogate_problem(value, label)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{label} is {value!r}, not a finite JSON number"
    items = ()
    if isinstance(value, dict):
        items = ((f"{path}.{name}" if path else name, item) for name, item in value.items())
        for name in value:
            if problem := _surrogate_problem(name, f"the member name {name!r}"):
                return problem
    elif isinstance(value, list):
        items = ((f"{path}[{position}]", item) for position, item in enumerate(value))
    for member, item in items:
        if problem := _find_unencodable(item, path=member):
            return problem
    return None


def _surrogate_problem(text: str, label: str) -> str | None:
    try:
        text.encode()
    except UnicodeEncodeError as error:
        code_point = ord(text[error.start])
        return f"{label} holds a lone UTF-16 surrogate (\\u{code_point:04x})"
    return None
