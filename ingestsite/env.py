"""Parse environment variables for settings.py and serve.py, without loading Django settings."""

import os

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    """Return the variable stripped of whitespace, or `default` when it is unset or blank."""
    return os.environ.get(name, "").strip() or default


def env_int(name: str, default: int) -> int:
    """Return the variable as an integer, or `default` when it is unset or blank."""
    raw = env_str(name)
    try:
        return int(raw) if raw else default
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from error


def env_float(name: str, default: float) -> float:
    """Return the variable as a number, or `default` when it is unset or blank."""
    raw = env_str(name)
    try:
        return float(raw) if raw else default
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from error


def env_bool(name: str, default: bool) -> bool:
    """Return the variable as a boolean (1/0, true/false, yes/no, on/off), or `default`."""
    raw = env_str(name).lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_list(name: str, default: str = "") -> list[str]:
    """Return the variable (or `default`) split on commas, without blank items."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]
