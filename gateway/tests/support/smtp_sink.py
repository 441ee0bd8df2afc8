"""A loopback SMTP server for the gateway's tests: saves every message it
receives as a file in a directory, then keeps serving until stdin closes.

    python3 smtp_sink.py --dir DIR --port PORT

Prints "ready <port>" on stdout once it accepts connections. Each message
becomes DIR/<n>.eml (written under a temporary name, then renamed, so a
reader never sees half a message), starting with an X-Envelope-To header
that lists the SMTP recipients. Needs aiosmtpd (python3 -m pip install aiosmtpd).
"""

import argparse
import os
import sys

try:
    from aiosmtpd.controller import Controller
except ImportError:
    sys.stderr.write("smtp_sink: aiosmtpd is not installed; run: python3 -m pip install aiosmtpd\n")
    sys.exit(3)


class SaveToDir:
    """aiosmtpd handler: one file per message."""

    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = os.path.join(self.directory, f"{self.count:06d}.eml")
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        with open(name + ".tmp", "wb") as out:
            out.write(("X-Envelope-To: " + ", ".join(envelope.rcpt_tos) + "\r\n").encode("utf-8"))
            out.write(content)
        os.rename(name + ".tmp", name)
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    controller = Controller(SaveToDir(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    print(f"ready {args.port}", flush=True)
    try:
        sys.stdin.read()  # until the test drops its end of the pipe
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
