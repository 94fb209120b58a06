"""The SDK's public surface: every RPC reachable, every public name documented."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

import mailroom
from mailroom import AsyncMailroomClient, MailroomClient
from mailroom.v1 import mail_pb2

METHODS = list(mail_pb2.DESCRIPTOR.services_by_name["MailService"].methods)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_the_service_has_methods():
    assert {m.name for m in METHODS} >= {"SendEmail", "GetEmail", "CancelEmail"}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_the_sync_client_has_every_rpc(method):
    attr = getattr(MailroomClient, _snake(method.name), None)
    assert callable(attr), f"MailroomClient lacks {_snake(method.name)}() for {method.full_name}"
    assert not inspect.iscoroutinefunction(attr)


# RPCs whose method pages for the caller: an iterator (sync) or an async iterator (asyncio),
# for `for` / `async for`, rather than a call returning once.
PAGED = {"ListEmails"}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_the_async_client_has_every_rpc(method):
    attr = getattr(AsyncMailroomClient, _snake(method.name), None)
    if method.name in PAGED:
        returns = str(inspect.signature(attr).return_annotation)
        assert returns.startswith("AsyncIterator["), (
            f"AsyncMailroomClient.{_snake(method.name)}() must return an AsyncIterator"
        )
        assert inspect.iscoroutinefunction(AsyncMailroomClient.list_emails_page)
        return
    assert inspect.iscoroutinefunction(attr), (
        f"AsyncMailroomClient lacks async {_snake(method.name)}() for {method.full_name}"
    )


def test_paged_methods_return_iterators_in_both_clients():
    for name in PAGED:
        sync = str(inspect.signature(getattr(MailroomClient, _snake(name))).return_annotation)
        assert sync.startswith("Iterator[")


def test_both_clients_have_the_same_signatures():
    def params(cls, name):
        return [
            (p.name, p.kind, p.default, str(p.annotation))
            for p in inspect.signature(getattr(cls, name)).parameters.values()
        ]

    for name, _ in inspect.getmembers(MailroomClient, inspect.isfunction):
        if not name.startswith("_"):
            assert params(MailroomClient, name) == params(AsyncMailroomClient, name), name


def test_both_clients_offer_the_same_methods():
    def public(cls):
        return {n for n, _ in inspect.getmembers(cls, callable) if not n.startswith("_")}

    assert public(MailroomClient) == public(AsyncMailroomClient)


def _public_members(obj):
    for name, member in vars(obj).items():
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        yield name, member


DOCUMENTED = [
    n
    for n in mailroom.__all__
    if inspect.isclass(getattr(mailroom, n)) or inspect.isfunction(getattr(mailroom, n))
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_public_name_has_a_docstring(name):
    obj = getattr(mailroom, name)
    assert inspect.getdoc(obj), f"mailroom.{name} has no docstring"
    if inspect.isclass(obj):
        for member_name, member in _public_members(obj):
            assert inspect.getdoc(member), f"mailroom.{name}.{member_name} has no docstring"


def test_the_sdk_imports_nothing_but_its_three_dependencies():
    """mailroom-sdk ships alone: no server/worker code, no grpcio-status, no pydantic."""
    code = (
        "import sys, mailroom, mailroom.aio, mailroom.client, mailroom.errors, mailroom.models\n"
        "from mailroom.v1 import mail_pb2, mail_pb2_grpc\n"
        "tops = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(tops & {'server', 'workers', 'grpc_status', 'pydantic', 'mongoengine'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
