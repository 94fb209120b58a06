"""Send one email with the blocking client and wait for its delivery.

Usage: MAILROOM_TARGET=localhost:50051 python send_sync.py alice@example.com
"""

from __future__ import annotations

import sys

from mailroom import DeliveryTimeout, EmailStatus, InvalidArgument, MailroomClient


def main(argv: list[str]) -> int:
    recipient = argv[1] if len(argv) > 1 else "alice@example.com"
    with MailroomClient.from_env() as client:
        try:
            email_id = client.send_email(
                [recipient],
                "Your order has shipped",
                "Hi! Your order is on its way.",
                html="<p>Hi! Your order is <b>on its way</b>.</p>",
            )
        except InvalidArgument as err:
            for violation in err.violations:
                print(f"invalid {violation.field}: {violation.description}", file=sys.stderr)
            return 2
        print(f"accepted {email_id}")
        try:
            email = client.wait_for_delivery(email_id, timeout=60)
        except DeliveryTimeout as err:
            status = err.email.status.name if err.email else "unknown"
            print(f"still {status} after 60 s", file=sys.stderr)
            return 1
        for attempt in email.attempts:
            print(f"  {attempt.provider}: {attempt.outcome.name} {attempt.error or ''}".rstrip())
        print(email.status.name)
        return 0 if email.status is EmailStatus.SENT else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
