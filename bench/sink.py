"""The project's SMTP sink (``SinkHandler``) in a process of its own, for the delivery benchmarks.

``python -m bench.sink --port P --count-file F [--dir D]``: like ``mailroom-smtp-sink``, except
that it logs only warnings (not a line per message), without ``--dir`` it writes no files, and
it keeps the number of DATA transactions it has answered in ``F`` (rewritten every 10 ms when it
changes): the benchmark follows progress there instead of counting SENT emails in the store,
which costs FerretDB a decoding of every matching document. It runs apart from the benchmark so
that its event loop does not share the load generator's GIL.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from devtools.smtp_sink import SinkHandler, make_controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, help="write each message here (default: no files)")
    parser.add_argument("--count-file", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    handler = SinkHandler(directory=args.dir, keep_messages=False)
    controller = make_controller(handler, args.host, args.port)
    controller.start()
    written = -1
    tmp = args.count_file.with_name(args.count_file.name + ".tmp")
    try:
        while True:
            count = handler.data_commands
            if count != written:
                tmp.write_text(str(count))
                os.replace(tmp, args.count_file)
                written = count
            if stop.wait(timeout=0.01):
                break
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
