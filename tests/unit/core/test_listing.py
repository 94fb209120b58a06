"""ListEmails over an in-memory store: each filter, newest first, pages and their tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from core.errors import InvalidArgument
from core.settings import Settings
from core.store import repository
from core.store.documents import Email, utcnow
from core.store.listing import EmailFilter, decode_page_token, encode_page_token, list_page
from mailroom.v1 import mail_pb2
from server.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, list_emails, parse_request

T0 = datetime(2026, 11, 1, 12, 0, 0)


def store(
    *,
    to: str = "to@example.com",
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    status: str = "QUEUED",
    tags: tuple[str, ...] = (),
    metadata: dict[str, str] | None = None,
    provider: str = "",
    idempotency_key: str = "",
    at: datetime | None = None,
) -> ObjectId:
    """Insert an email as the API stores it, then give it a status/provider as a worker would."""
    now = at or utcnow()
    oid = ObjectId.from_datetime(now.replace(tzinfo=UTC)) if at else ObjectId()
    new = repository.NewEmail(
        to=[to],
        cc=list(cc),
        bcc=list(bcc),
        subject="Hello",
        text="the text body",
        html="<p>the html body</p>",
        from_address="shop@example.com",
        idempotency_key=idempotency_key,
        tags=list(tags),
        metadata=metadata or {},
        headers={"X-Campaign": "spring"},
        attachments=[repository.NewAttachment("a.pdf", "application/pdf", b"%PDF-1.7")],
    )
    document = repository.new_email_document(new, message_id_domain="test", email_id=oid, now=now)
    document.update(status=status, provider=provider)
    repository.insert_email(document)
    return oid


def ids(request: mail_pb2.ListEmailsRequest, settings: Settings) -> list[str]:
    return [e.id for e in list_emails(request, settings).emails]


pytestmark = pytest.mark.usefixtures("fake_store")


def test_no_filter_lists_every_email_newest_first(settings: Settings) -> None:
    stored = [store(at=T0 + timedelta(minutes=i)) for i in range(5)]
    assert ids(mail_pb2.ListEmailsRequest(), settings) == [str(i) for i in reversed(stored)]


def test_status_filter_keeps_any_of_the_statuses(settings: Settings) -> None:
    sent, failed, _queued = store(status="SENT"), store(status="FAILED"), store()
    request = mail_pb2.ListEmailsRequest(
        status=[mail_pb2.EMAIL_STATUS_SENT, mail_pb2.EMAIL_STATUS_FAILED]
    )
    assert ids(request, settings) == [str(failed), str(sent)]
    one = mail_pb2.ListEmailsRequest(status=[mail_pb2.EMAIL_STATUS_FAILED])
    assert ids(one, settings) == [str(failed)]


def test_recipient_filter_matches_to_cc_and_bcc_whatever_the_case(settings: Settings) -> None:
    by_to = store(to="Ann <Ann@Example.com>")
    by_cc = store(cc=("ann@example.com",))
    by_bcc = store(bcc=("ANN@example.com",))
    store(to="bob@example.com")
    request = mail_pb2.ListEmailsRequest(recipient="ann@EXAMPLE.com")
    assert ids(request, settings) == [str(by_bcc), str(by_cc), str(by_to)]


def test_tag_provider_and_idempotency_key_filters(settings: Settings) -> None:
    tagged = store(tags=("welcome", "b2b"))
    store(tags=("receipt",))
    ses = store(provider="ses")
    keyed = store(idempotency_key="order-7")
    assert ids(mail_pb2.ListEmailsRequest(tag="b2b"), settings) == [str(tagged)]
    assert ids(mail_pb2.ListEmailsRequest(provider="ses"), settings) == [str(ses)]
    request = mail_pb2.ListEmailsRequest(idempotency_key="order-7")
    assert ids(request, settings) == [str(keyed)]


def test_metadata_filter_needs_every_pair(settings: Settings) -> None:
    both = store(metadata={"plan": "pro", "region": "eu"})
    pro = store(metadata={"plan": "pro"})
    store(metadata={"plan": "free", "region": "eu"})
    assert ids(mail_pb2.ListEmailsRequest(metadata={"plan": "pro"}), settings) == [
        str(pro),
        str(both),
    ]
    request = mail_pb2.ListEmailsRequest(metadata={"plan": "pro", "region": "eu"})
    assert ids(request, settings) == [str(both)]


def test_created_after_is_inclusive_and_created_before_exclusive(settings: Settings) -> None:
    stored = [store(at=T0 + timedelta(hours=i)) for i in range(4)]
    request = mail_pb2.ListEmailsRequest()
    request.created_after.FromDatetime(T0 + timedelta(hours=1))
    request.created_before.FromDatetime(T0 + timedelta(hours=3))
    assert ids(request, settings) == [str(stored[2]), str(stored[1])]


def test_filters_combine(settings: Settings) -> None:
    match = store(status="SENT", tags=("welcome",), metadata={"plan": "pro"}, provider="smtp")
    store(status="SENT", tags=("welcome",), metadata={"plan": "free"}, provider="smtp")
    store(status="FAILED", tags=("welcome",), metadata={"plan": "pro"}, provider="smtp")
    store(status="SENT", tags=("other",), metadata={"plan": "pro"}, provider="smtp")
    request = mail_pb2.ListEmailsRequest(
        status=[mail_pb2.EMAIL_STATUS_SENT],
        tag="welcome",
        metadata={"plan": "pro"},
        provider="smtp",
    )
    assert ids(request, settings) == [str(match)]


def test_paging_gives_every_email_once_while_new_ones_arrive(settings: Settings) -> None:
    before = {str(store(at=T0 + timedelta(seconds=i))) for i in range(120)}
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = list_emails(mail_pb2.ListEmailsRequest(page_size=50, page_token=token), settings)
        seen += [e.id for e in response.emails]
        pages += 1
        # Emails accepted meanwhile are newer than the cursor: the walk does not meet them.
        store()
        token = response.next_page_token
        if not token:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == before


def test_a_full_last_page_has_no_next_token(settings: Settings) -> None:
    for i in range(4):
        store(at=T0 + timedelta(seconds=i))
    first = list_emails(mail_pb2.ListEmailsRequest(page_size=2), settings)
    assert first.next_page_token
    second = list_emails(
        mail_pb2.ListEmailsRequest(page_size=2, page_token=first.next_page_token), settings
    )
    assert len(second.emails) == 2
    assert second.next_page_token == ""


def test_basic_view_leaves_out_bodies_headers_and_attachment_content(settings: Settings) -> None:
    store(tags=("t",), metadata={"k": "v"})
    basic = list_emails(mail_pb2.ListEmailsRequest(), settings).emails[0]
    assert basic.content == basic.html == ""
    assert dict(basic.headers) == {}
    assert basic.attachments[0].filename == "a.pdf"
    assert basic.attachments[0].content == b""
    assert basic.attachments[0].size == len(b"%PDF-1.7")
    assert list(basic.tags) == ["t"]
    assert dict(basic.metadata) == {"k": "v"}
    full_request = mail_pb2.ListEmailsRequest(view=mail_pb2.EMAIL_VIEW_FULL)
    full = list_emails(full_request, settings).emails[0]
    assert full.content == "the text body"
    assert full.html == "<p>the html body</p>"
    assert dict(full.headers) == {"X-Campaign": "spring"}
    assert full.attachments[0].content == b"%PDF-1.7"


def test_basic_projection_asks_the_store_for_less() -> None:
    store()
    email = list_page(EmailFilter(), page_size=1, full=False).emails[0]
    assert not {"text", "html", "headers"} & set(email._son)  # not even read from the store
    assert email.text == "" and email.html == "" and dict(email.headers) == {}


def violation_fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


def test_a_token_used_with_other_filters_is_refused(settings: Settings) -> None:
    for _ in range(3):
        store(tags=("a",))
    first = list_emails(mail_pb2.ListEmailsRequest(tag="a", page_size=1), settings)
    other = mail_pb2.ListEmailsRequest(tag="b", page_size=1, page_token=first.next_page_token)
    with pytest.raises(InvalidArgument) as exc:
        list_emails(other, settings)
    assert violation_fields(exc) == ["page_token"]


@pytest.mark.parametrize("token", ["not a token!", "abc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_a_malformed_token_is_refused(settings: Settings, token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        list_emails(mail_pb2.ListEmailsRequest(page_token=token), settings)
    assert violation_fields(exc) == ["page_token"]


def test_tokens_round_trip_for_equal_filters_in_any_order() -> None:
    oid = ObjectId()
    one = EmailFilter.of(statuses=["SENT", "FAILED"], metadata={"a": "1", "b": "2"})
    same = EmailFilter.of(statuses=["FAILED", "SENT"], metadata={"b": "2", "a": "1"})
    assert decode_page_token(encode_page_token(oid, one), same) == oid


def test_page_size_default_clamp_and_negative() -> None:
    assert parse_request(mail_pb2.ListEmailsRequest())[1] == DEFAULT_PAGE_SIZE
    assert parse_request(mail_pb2.ListEmailsRequest(page_size=10_000))[1] == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as exc:
        parse_request(mail_pb2.ListEmailsRequest(page_size=-1))
    assert violation_fields(exc) == ["page_size"]


def test_bad_filters_are_named() -> None:
    request = mail_pb2.ListEmailsRequest(status=[mail_pb2.EMAIL_STATUS_SENT, 0])
    request.created_after.FromDatetime(T0)
    request.created_before.FromDatetime(T0)
    with pytest.raises(InvalidArgument) as exc:
        parse_request(request)
    assert violation_fields(exc) == ["status[1]", "created_before"]


def test_rest_metadata_parameters_come_from_envoys_original_path(settings: Settings) -> None:
    pro_eu = store(metadata={"plan": "pro", "region": "eu west"})
    store(metadata={"plan": "pro"})
    path = "/api/emails?page_size=5&metadata.plan=pro&metadata.region=eu%20west&tag="
    assert len(ids(mail_pb2.ListEmailsRequest(page_size=5), settings)) == 2
    response = list_emails(mail_pb2.ListEmailsRequest(page_size=5), settings, original_path=path)
    assert [e.id for e in response.emails] == [str(pro_eu)]


def test_a_rest_metadata_key_given_twice_is_refused() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_request(mail_pb2.ListEmailsRequest(), "/api/emails?metadata.a=1&metadata.a=2")
    assert violation_fields(exc) == ["metadata.a"]


AGES = [
    timedelta(minutes=m)
    for m in (1, 7, 30, 61, 125, 300, 1_500, 3_000, 9_000, 30_000, 60_000, 200_000, 600_000)
]


@pytest.mark.parametrize("tag", ["", "even"])
@pytest.mark.parametrize("page_size", [1, 2, 5])
def test_the_bucket_walk_pages_as_the_plain_query_does(tag: str, page_size: int) -> None:
    now = utcnow().replace(microsecond=0)
    stored = [
        store(at=now - age, tags=("even",) if i % 2 == 0 else ()) for i, age in enumerate(AGES)
    ]
    email_filter = EmailFilter.of(tag=tag)

    def walk(bucketed: bool) -> list[str]:
        seen: list[str] = []
        token = ""
        while True:
            page = list_page(email_filter, page_size=page_size, page_token=token, bucketed=bucketed)
            seen += [str(e.id) for e in page.emails]
            token = page.next_page_token
            if not token:
                return seen

    expected = [str(oid) for i, oid in enumerate(stored) if not tag or i % 2 == 0]
    assert walk(bucketed=False) == expected
    assert walk(bucketed=True) == expected


def test_the_bucket_walk_finds_emails_stored_without_buckets_last() -> None:
    old = store(at=T0)
    Email._get_collection().update_one({"_id": old}, {"$unset": {"list_buckets": ""}})
    new = store()
    page = list_page(EmailFilter(), page_size=5, bucketed=True)
    assert [e.id for e in page.emails] == [new, old]


def test_the_bucket_walk_starts_at_created_before() -> None:
    now = utcnow().replace(microsecond=0)
    stored = [store(at=now - timedelta(days=d)) for d in (0, 3, 10, 40)]
    email_filter = EmailFilter.of(created_before=now - timedelta(days=2))
    page = list_page(email_filter, page_size=5, bucketed=True)
    assert [e.id for e in page.emails] == stored[1:]
