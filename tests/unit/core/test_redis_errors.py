"""No exception redis-py or Dramatiq's broker defines escapes :func:`map_redis_errors` unmapped."""

from __future__ import annotations

import inspect
import socket
from types import ModuleType

import dramatiq.errors
import pytest
import redis.exceptions

from core.errors import QueueUnavailable
from core.redis_errors import map_redis_errors


def exception_classes(module: ModuleType) -> list[type[BaseException]]:
    """Every exception class ``module`` defines or exports, by name."""
    return sorted(
        (
            value
            for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, BaseException)
        ),
        key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
    )


# The arguments the libraries raise their exceptions with: a message, nothing, a cluster
# redirection ("<slot> <host:port>"), Dramatiq's DecodeError (message, data, cause).
ARGUMENTS: tuple[tuple[object, ...], ...] = (
    ("boom",),
    (),
    ("3999 127.0.0.1:6381",),
    ("boom", b"{", ValueError("bad json")),
)


def instance_of(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` built the way its library raises it."""
    for args in ARGUMENTS:
        try:
            return cls(*args)
        except (TypeError, ValueError):
            continue
    raise AssertionError(f"cannot build {cls.__name__}: add its arguments to ARGUMENTS")


FOREIGN = exception_classes(redis.exceptions) + exception_classes(dramatiq.errors)


def test_the_libraries_still_define_what_this_test_enumerates() -> None:
    names = {cls.__name__ for cls in FOREIGN}
    assert {"RedisError", "ConnectionError", "ChildDeadlockedError", "DramatiqError"} <= names
    assert len(FOREIGN) > 30


@pytest.mark.parametrize("cls", FOREIGN, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_no_redis_or_dramatiq_exception_escapes_unmapped(cls: type[BaseException]) -> None:
    exc = instance_of(cls)
    with pytest.raises(QueueUnavailable) as caught, map_redis_errors():
        raise exc
    assert caught.value.__cause__ is exc
    assert cls.__name__ in caught.value.message


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
        socket.gaierror(-2, "Name or service not known"),
        BrokenPipeError(32, "Broken pipe"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_socket_errors_redis_py_did_not_wrap_are_mapped(exc: OSError) -> None:
    with pytest.raises(QueueUnavailable) as caught, map_redis_errors():
        raise exc
    assert caught.value.__cause__ is exc


def test_the_message_names_what_was_unavailable() -> None:
    with pytest.raises(QueueUnavailable) as caught, map_redis_errors("Redis at x is unreachable"):
        raise redis.exceptions.ConnectionError("refused")
    assert caught.value.message == "Redis at x is unreachable: ConnectionError: refused"


def test_other_errors_pass_through_untouched() -> None:
    original = ValueError("a bug somewhere")
    with pytest.raises(ValueError) as caught, map_redis_errors():
        raise original
    assert caught.value is original
