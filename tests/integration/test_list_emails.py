"""ListEmails end to end: REST through Envoy and gRPC on the real API over FerretDB.

The session's store is shared with other tests, so each test marks its own emails with a tag,
recipient or metadata value of its own and filters on it.
"""

from __future__ import annotations

import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from bson import ObjectId

from core.store import repository
from core.store.documents import Email, utcnow
from core.store.repository import list_bucket
from helpers import grpc_violations, rest_violations, wait_until
from mailroom.v1 import mail_pb2


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def store(
    *,
    tag: str,
    status: str = "QUEUED",
    to: str = "to@example.com",
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    metadata: dict[str, str] | None = None,
    at: datetime | None = None,
) -> str:
    """Insert an email as the API stores it, in ``status`` (as a worker would leave it)."""
    now = at or utcnow()
    oid = ObjectId.from_datetime(now.replace(tzinfo=UTC)) if at else ObjectId()
    new = repository.NewEmail(
        to=[to],
        cc=list(cc),
        bcc=list(bcc),
        subject="Listed",
        text="the text body",
        html="<p>the html body</p>",
        from_address="shop@example.com",
        tags=[tag],
        metadata=metadata or {},
        headers={"X-Campaign": "spring"},
        attachments=[repository.NewAttachment("a.pdf", "application/pdf", b"%PDF-1.7")],
    )
    document = repository.new_email_document(
        new, message_id_domain="mailroom.test", email_id=oid, now=now
    )
    document["status"] = status
    repository.insert_email(document)
    return str(oid)


def rest_list(envoy, **params: object) -> tuple[int, dict]:
    """GET /api/emails with query parameters (a list value repeats the parameter)."""
    query = urllib.parse.urlencode(params, doseq=True)
    status, _headers, body = envoy.request("GET", f"/api/emails?{query}", timeout=30)
    assert isinstance(body, dict), body
    return status, body


def rest_ids(envoy, **params: object) -> list[str]:
    status, body = rest_list(envoy, **params)
    assert status == 200, body
    return [e["id"] for e in body.get("emails", [])]


@pytest.mark.usefixtures("real_store")
def test_rest_filters_by_two_statuses_recipient_tag_and_metadata(envoy):
    tag = unique("t")
    ann = f"{unique('ann')}@example.com"
    sent = store(tag=tag, status="SENT", to=ann, metadata={"plan": "pro"})
    failed = store(tag=tag, status="FAILED", cc=(ann.upper(),), metadata={"plan": "free"})
    queued = store(tag=tag, bcc=(ann,), metadata={"plan": "pro", "region": "eu"})

    assert rest_ids(envoy, tag=tag) == [queued, failed, sent]
    assert rest_ids(envoy, tag=tag, status=["EMAIL_STATUS_SENT", "EMAIL_STATUS_FAILED"]) == [
        failed,
        sent,
    ]
    # cc and bcc match like to, whatever the case of the address.
    assert rest_ids(envoy, recipient=ann) == [queued, failed, sent]
    # metadata.<key>=<value> query parameters fill the metadata map: every pair must match.
    assert rest_ids(envoy, tag=tag, **{"metadata.plan": "pro"}) == [queued, sent]
    assert rest_ids(envoy, tag=tag, **{"metadata.plan": "pro", "metadata.region": "eu"}) == [queued]


@pytest.mark.usefixtures("real_store")
def test_rest_created_after_and_before_bound_the_creation_time(envoy):
    tag = unique("t")
    t0 = utcnow() - timedelta(days=2)
    stored = [store(tag=tag, at=t0 + timedelta(hours=i)) for i in range(4)]
    after = (t0 + timedelta(hours=1)).replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    before = (t0 + timedelta(hours=3)).replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    assert rest_ids(envoy, tag=tag, created_after=after) == stored[:0:-1]
    assert rest_ids(envoy, tag=tag, created_after=after, created_before=before) == [
        stored[2],
        stored[1],
    ]


@pytest.mark.usefixtures("real_store")
def test_rest_pages_with_tokens_and_refuses_a_token_of_other_filters(envoy):
    tag = unique("t")
    stored = [store(tag=tag) for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        status, body = rest_list(envoy, tag=tag, page_size=2, page_token=token)
        assert status == 200, body
        seen += [e["id"] for e in body.get("emails", [])]
        token = body.get("nextPageToken", "")
        if not token:
            break
        # An email accepted between pages is newer than the cursor: it does not shift the walk.
        store(tag=tag)
    assert seen == stored[::-1]

    _, first = rest_list(envoy, tag=tag, page_size=1)
    status, body = rest_list(envoy, tag=unique("t"), page_size=1, page_token=first["nextPageToken"])
    assert status == 400, body
    assert rest_violations(body) == ["page_token"]
    status, body = rest_list(envoy, page_token="not-a-token")
    assert status == 400, body
    assert rest_violations(body) == ["page_token"]
    status, body = rest_list(envoy, page_size=-1)
    assert status == 400, body
    assert rest_violations(body) == ["page_size"]


@pytest.mark.usefixtures("real_store")
def test_rest_basic_view_leaves_out_bodies_headers_and_attachment_contents(envoy):
    tag = unique("t")
    store(tag=tag)
    [basic] = rest_list(envoy, tag=tag)[1]["emails"]
    # Envoy prints empty fields too (always_print_primitive_fields): they are empty.
    assert basic["content"] == basic["html"] == ""
    assert basic.get("headers", {}) == {}
    [attachment] = basic["attachments"]
    assert attachment["filename"] == "a.pdf"
    assert attachment.get("content", "") == ""
    assert attachment["size"] == "8"
    assert basic["tags"] == [tag]
    [full] = rest_list(envoy, tag=tag, view="EMAIL_VIEW_FULL")[1]["emails"]
    assert full["content"] == "the text body"
    assert full["html"] == "<p>the html body</p>"
    assert full["headers"] == {"X-Campaign": "spring"}
    assert full["attachments"][0]["content"] == "JVBERi0xLjc="  # base64 of %PDF-1.7


@pytest.mark.usefixtures("real_store")
def test_grpc_lists_with_filters_views_and_pages(mail_client):
    tag = unique("t")
    ann = f"{unique('ann')}@example.com"
    sent = store(tag=tag, status="SENT", cc=(ann,))
    failed = store(tag=tag, status="FAILED", bcc=(ann,))
    store(tag=tag)
    request = mail_pb2.ListEmailsRequest(
        recipient=ann,
        status=[mail_pb2.EMAIL_STATUS_SENT, mail_pb2.EMAIL_STATUS_FAILED],
        page_size=1,
    )
    first = mail_client.ListEmails(request, timeout=30)
    assert [e.id for e in first.emails] == [failed]
    assert first.emails[0].content == ""
    request.page_token = first.next_page_token
    request.view = mail_pb2.EMAIL_VIEW_FULL
    second = mail_client.ListEmails(request, timeout=30)
    assert [e.id for e in second.emails] == [sent]
    assert second.emails[0].content == "the text body"
    assert second.next_page_token == ""

    request.tag = unique("other")
    with pytest.raises(grpc.RpcError) as exc:
        mail_client.ListEmails(request, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_violations(exc.value) == ["page_token"]


def test_an_email_sent_over_rest_is_listed_by_its_tag_once_delivered(
    envoy, worker, smtp_sink, mail_client
):
    tag = unique("t")
    body = {
        "to": ["alice@example.com"],
        "title": "Tagged",
        "content": "Hello",
        "tags": [tag],
        "metadata": {"order": "42"},
        "idempotencyKey": unique("key"),
    }
    status, _headers, reply = envoy.request("POST", "/api/email", body)
    assert status == 201, reply
    email_id = reply["id"]

    def listed_as_sent() -> bool:
        return rest_ids(envoy, tag=tag, status="EMAIL_STATUS_SENT") == [email_id]

    wait_until(listed_as_sent, timeout=60, interval=0.2, message=f"{email_id} listed as SENT")
    [email] = rest_list(envoy, **{"metadata.order": "42", "tag": tag})[1]["emails"]
    assert email["id"] == email_id
    assert email["metadata"] == {"order": "42"}
    assert email["provider"]
    assert rest_ids(envoy, idempotency_key=body["idempotencyKey"]) == [email_id]


@pytest.mark.usefixtures("real_store")
def test_ferretdb_serves_each_filter_and_bucket_from_an_index():
    """FerretDB pushes the equality filters down; PostgreSQL reads them from the GIN indexes."""
    tag = unique("t")
    # Values of this test alone: PostgreSQL's planner rightly prefers a Seq Scan for a value
    # that most rows share (e.g. provider "smtp" after the rest of the suite has run).
    to, plan, provider, key = (
        unique("to") + "@example.com",
        unique("p"),
        unique("prov"),
        unique("k"),
    )
    oid = store(tag=tag, status="FAILED", to=to, metadata={"plan": plan})
    Email.objects(id=oid).update_one(set__provider=provider, set__idempotency_key=key)
    bucket = list_bucket(3600, int(utcnow().replace(tzinfo=UTC).timestamp()))
    for field, value in [
        ("recipients", to),
        ("tags", tag),
        ("metadata_pairs", f"plan={plan}"),
        ("provider", provider),
        ("status", "FAILED"),
        ("idempotency_key", key),
    ]:
        query = {field: value, "list_buckets": bucket}
        plan = Email._get_db().command(
            {"explain": {"find": "emails", "filter": query, "sort": {"_id": -1}, "limit": 51}}
        )
        assert plan["filterPushdown"] is True, (field, plan)
        text = str(plan["queryPlanner"])
        assert "Seq Scan" not in text, (field, text)
        assert f"{field}_gin" in text or "list_buckets_gin" in text, (field, text)
