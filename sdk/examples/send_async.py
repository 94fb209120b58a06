"""Send several emails concurrently with the asyncio client and wait for all of them.

Usage: MAILROOM_TARGET=localhost:50051 python send_async.py alice@example.com bob@example.com
"""

from __future__ import annotations

import asyncio
import sys

from mailroom import AsyncMailroomClient, Email, EmailStatus


async def send_one(client: AsyncMailroomClient, recipient: str) -> Email:
    email_id = await client.send_email(recipient, "Welcome", f"Hello {recipient}!")
    return await client.wait_for_delivery(email_id, timeout=60)


async def main(recipients: list[str]) -> int:
    # The client must be created inside the running event loop.
    async with AsyncMailroomClient.from_env() as client:
        emails = await asyncio.gather(*(send_one(client, r) for r in recipients))
    for email in emails:
        print(f"{email.to[0]}: {email.status.name}")
    return 0 if all(e.status is EmailStatus.SENT for e in emails) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or ["alice@example.com"])))
