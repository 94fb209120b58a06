"""Send a batch of emails with an attachment and a tag, wait for them, then list them by tag.

Usage: MAILROOM_TARGET=localhost:50051 python batch_and_list.py alice@example.com bob@example.com
"""

from __future__ import annotations

import sys
import uuid

from mailroom import Attachment, EmailStatus, MailroomClient, OutgoingEmail


def main(recipients: list[str]) -> int:
    # A tag of this run only, so the listing below finds exactly these emails.
    tag = f"example-{uuid.uuid4().hex[:8]}"
    report = Attachment("report.csv", b"id,total\n1,9.90\n", content_type="text/csv")
    batch = [
        OutgoingEmail(
            recipient,
            "Your monthly report",
            "The report is attached.",
            attachments=[report],
            tags=[tag, "reports"],
            metadata={"recipient_index": str(index)},
        )
        for index, recipient in enumerate(recipients)
    ]
    with MailroomClient.from_env() as client:
        response = client.send_email_batch(batch)
        for result in response.refused:
            print(f"refused {recipients[result.index]}: {result.error}", file=sys.stderr)
        print(f"accepted {response.accepted_count} of {len(response)}")
        for result in response.accepted:
            assert result.id is not None
            client.wait_for_delivery(result.id, timeout=60)
        # Newest first, fetched page by page as the loop goes.
        emails = list(client.list_emails(tag=tag, page_size=10))
    for email in emails:
        files = ", ".join(f"{a.filename} ({a.size} bytes)" for a in email.attachments)
        print(f"{email.to[0]}: {email.status.name} with {files}")
    ok = bool(emails) and all(e.status is EmailStatus.SENT for e in emails)
    return 0 if ok and not response.refused else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["alice@example.com"]))
