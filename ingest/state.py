"""The one registry of per-process state: objects built once per process, forgotten with settings.

Each long-lived object of a process (the gateway's batcher, the key cache, the rate limiter, the
stats recorder, the Kafka producer, the readiness probe) is built on first use by a getter that
`per_process` makes. Tests change settings with pytest-django's `settings` fixture, which sends
`setting_changed`: every object is then forgotten and built again from the new settings on next
use. A test that needs a fake says `getter.replace(fake)`: a replaced object stays, whatever the
settings do, until `getter.replace(None)`. No test patches a private global.
"""

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver

T = TypeVar("T")

_getters: list["PerProcess"] = []


class PerProcess(Generic[T]):
    """Build an object on first call, once even when threads race, and return it after."""

    def __init__(self, build: Callable[[], T]):
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None
        self._replaced = False
        self.__doc__ = build.__doc__
        self.__name__ = build.__name__

    def __call__(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    def current(self) -> T | None:
        """Return the object if it was built, without building it (for shutdown)."""
        return self._value

    def replace(self, value: T | None) -> None:
        """Use `value` from now on (a test's fake), or build anew on next call if None."""
        with self._lock:
            self._value = value
            self._replaced = value is not None

    def forget(self) -> None:
        """Build anew on next call, unless a replacement was set."""
        with self._lock:
            if not self._replaced:
                self._value = None


def per_process(build: Callable[[], T]) -> PerProcess[T]:
    """Make `build` the getter of one per-process object."""
    getter = PerProcess(build)
    _getters.append(getter)
    return getter


def forget_all() -> None:
    """Forget every per-process object but replacements; each is built anew on next call."""
    for getter in _getters:
        getter.forget()


@receiver(setting_changed)
def _forget_on_setting_changed(**kwargs) -> None:
    forget_all()
