"""list_emails and list_emails_page: the request they build and the paging, on a fake server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sdk_fake_service import FakeServer

import mailroom
from mailroom import AsyncMailroomClient, Attachment, EmailStatus, MailroomClient, RetryPolicy
from mailroom._convert import build_list_request
from mailroom.v1 import mail_pb2

FAST_RETRY = RetryPolicy(initial_backoff=0.05, max_backoff=0.2)


# --- the request ------------------------------------------------------------------------------


def test_every_filter_lands_in_its_field():
    after = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    before = datetime(2030, 1, 2, tzinfo=UTC)
    request = build_list_request(
        {
            "status": [EmailStatus.SENT, EmailStatus.FAILED],
            "recipient": "a@example.com",
            "tag": "welcome",
            "metadata": {"user_id": "42"},
            "provider": "smtp",
            "created_after": after,
            "created_before": before,
            "idempotency_key": "order-42",
        },
        page_size=10,
        page_token="tok",
        full=True,
    )
    assert list(request.status) == [mail_pb2.EMAIL_STATUS_SENT, mail_pb2.EMAIL_STATUS_FAILED]
    assert (request.recipient, request.tag, request.provider) == (
        "a@example.com",
        "welcome",
        "smtp",
    )
    assert dict(request.metadata) == {"user_id": "42"}
    assert request.created_after.ToDatetime(tzinfo=UTC) == after
    assert request.created_before.ToDatetime(tzinfo=UTC) == before
    assert request.idempotency_key == "order-42"
    assert (request.page_size, request.page_token) == (10, "tok")
    assert request.view == mail_pb2.EMAIL_VIEW_FULL


def test_no_filters_ask_for_the_first_basic_page_of_50():
    request = build_list_request({})
    assert request == mail_pb2.ListEmailsRequest(page_size=50, view=mail_pb2.EMAIL_VIEW_BASIC)
    assert not request.HasField("created_after")


def test_none_is_the_same_as_no_filter():
    request = build_list_request({"status": None, "tag": None, "created_after": None})
    assert request == build_list_request({})


def test_a_single_status_is_one_status():
    assert list(build_list_request({"status": EmailStatus.QUEUED}).status) == [
        mail_pb2.EMAIL_STATUS_QUEUED
    ]


@pytest.mark.parametrize("status", ["SENT", ["SENT"], [5]])
def test_a_status_that_is_not_an_email_status_is_refused(status):
    with pytest.raises(TypeError, match="EmailStatus"):
        build_list_request({"status": status})  # type: ignore[typeddict-item]


def test_a_naive_created_after_is_refused_naming_it():
    with pytest.raises(ValueError, match="created_after must be timezone-aware"):
        build_list_request({"created_after": datetime(2030, 1, 1)})


# --- on the wire -----------------------------------------------------------------------------


@pytest.fixture
def fake():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    with MailroomClient(fake.target, retry=FAST_RETRY, timeout=5) as c:
        yield c


def _send(client: MailroomClient, count: int, tag: str) -> list[str]:
    return [
        client.send_email(f"u{i}@example.com", f"#{i}", "body", tags=[tag], headers={"X-N": str(i)})
        for i in range(count)
    ]


def test_list_emails_follows_the_page_tokens_lazily(fake, client):
    ids = _send(client, 5, "spring")
    _send(client, 2, "other")
    emails = client.list_emails(tag="spring", page_size=2)
    assert fake.service.calls_of("ListEmails") == []  # nothing asked until iterated
    first = next(emails)
    assert len(fake.service.calls_of("ListEmails")) == 1
    rest = list(emails)
    assert [e.id for e in [first, *rest]] == ids[::-1]  # newest first, every page
    requests = [request for _, request, _ in fake.service.calls_of("ListEmails")]
    assert [r.page_token for r in requests] == ["", "2", "4"]
    assert {(r.tag, r.page_size) for r in requests} == {("spring", 2)}


def test_listed_emails_leave_bodies_out_unless_full(fake, client):
    client.send_email(
        "a@example.com", "t", "body", attachments=[Attachment("a.txt", b"abc")], tags="x"
    )
    [basic] = client.list_emails(tag="x")
    assert basic.content == "" and basic.headers == {}
    assert [(a.filename, a.size, a.content) for a in basic.attachments] == [("a.txt", 3, b"")]
    [full] = client.list_emails(tag="x", full=True)
    assert full.content == "body"
    assert full.attachments[0].content == b"abc"
    assert full.tags == ["x"]


def test_list_emails_page_returns_the_token_of_the_next_page(fake, client):
    ids = _send(client, 3, "t")
    page = client.list_emails_page(tag="t", page_size=2)
    assert [e.id for e in page] == ids[:0:-1]
    assert page.next_page_token is not None
    last = client.list_emails_page(tag="t", page_size=2, page_token=page.next_page_token)
    assert [e.id for e in last.emails] == ids[:1]
    assert last.next_page_token is None


def test_an_empty_listing_makes_one_call(fake, client):
    assert list(client.list_emails(tag="none")) == []
    assert len(fake.service.calls_of("ListEmails")) == 1


def test_bad_filters_fail_at_the_call_not_while_iterating(fake, client):
    with pytest.raises(TypeError, match="unknown filter"):
        client.list_emails(tags="x")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="created_before"):
        client.list_emails(created_before=datetime(2030, 1, 1))
    assert fake.service.calls == []


def test_a_failing_page_raises_a_mailroom_error_while_iterating(fake, client):
    _send(client, 3, "t")
    emails = client.list_emails(tag="t", page_size=2)
    assert next(emails)
    fake.service.fail_next = [mailroom.Internal.code]
    with pytest.raises(mailroom.Internal):
        list(emails)


def test_the_async_client_iterates_every_page(fake):
    with MailroomClient(fake.target) as sync:
        ids = _send(sync, 5, "async")

    async def scenario() -> tuple[list[str], list[str], str | None]:
        async with AsyncMailroomClient(fake.target, retry=FAST_RETRY) as c:
            listed = [e.id async for e in c.list_emails(tag="async", page_size=2)]
            page = await c.list_emails_page(tag="async", page_size=4)
            return listed, [e.id for e in page], page.next_page_token

    listed, first_page, token = asyncio.run(scenario())
    assert listed == ids[::-1]
    assert first_page == ids[:0:-1]
    assert token is not None
    assert len(fake.service.calls_of("ListEmails")) == 4
