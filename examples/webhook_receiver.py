"""A small receiver for the team server's webhooks (standard library only): it verifies each delivery's HMAC
signature and prints the verified event as one JSON line; a delivery it cannot verify gets 401 and is not printed.

    export WEBHOOK_SECRET=...   # the secret given to `sentiment-flow webhook add`
    python examples/webhook_receiver.py --port 8765

MLflow signs `DELIVERY_ID.TIMESTAMP.BODY` with HMAC-SHA256 and the webhook's secret and sends
`X-MLflow-Signature: v1,<base64 digest>`, `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp` (Unix seconds). A
delivery older than MAX_AGE, or one already seen, is refused too: a captured request cannot be replayed. Put your
own action (a chat notice, a deployment job) in `on_event`; answer fast, as the server waits at most
MLFLOW_WEBHOOK_REQUEST_TIMEOUT seconds (30) and retries an error answer.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_VAR = "WEBHOOK_SECRET"  # noqa: S105 - a variable's name; the shared secret, from the environment: never on the command line
MAX_AGE = 300  # seconds a delivery's timestamp may lie in the past (or future: clock skew)
MAX_BODY = 1 << 20  # bytes: MLflow's payloads are a few hundred
REMEMBERED = 10_000  # delivery ids kept to refuse replays within MAX_AGE


def verify(secret: str, headers, body: bytes, now: float | None = None) -> str | None:
    """None when the delivery is MLflow's, signed with `secret` and fresh; else why it is refused."""
    signature = headers.get("X-MLflow-Signature", "")
    delivery_id = headers.get("X-MLflow-Delivery-Id", "")
    timestamp = headers.get("X-MLflow-Timestamp", "")
    if not (signature and delivery_id and timestamp):
        return "unsigned (X-MLflow-Signature, -Delivery-Id or -Timestamp missing)"
    if not timestamp.isdigit() or abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE:
        return f"timestamp {timestamp!r} is not within {MAX_AGE} s of now"
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "bad signature (another secret?)"
    return None


def on_event(event: dict) -> None:
    """What to do with a verified event: here, print it as one JSON line."""
    print(json.dumps(event, sort_keys=True), flush=True)


def make_server(secret: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) that answers POSTs: 200 for a verified delivery, 401 for any other."""
    seen: OrderedDict[str, None] = OrderedDict()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._answer(413, "too large")
            body = self.rfile.read(length)
            refusal = verify(secret, self.headers, body)
            delivery_id = self.headers.get("X-MLflow-Delivery-Id", "")
            if refusal is None and delivery_id in seen:
                refusal = f"delivery {delivery_id} was received before (a replay?)"
            if refusal is not None:
                print(f"refused a delivery from {self.client_address[0]}: {refusal}", file=sys.stderr, flush=True)
                return self._answer(401, refusal)
            seen[delivery_id] = None
            if len(seen) > REMEMBERED:
                seen.popitem(last=False)
            on_event(json.loads(body))
            self._answer(200, "ok")

        def _answer(self, status: int, text: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(text.encode() + b"\n")

        def log_message(self, *args) -> None:  # one line per event above is enough
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default: %(default)s)")
    args = parser.parse_args()
    secret = os.environ.get(SECRET_VAR)
    if not secret:
        sys.exit(f"Set {SECRET_VAR} to the webhook's secret (read -s {SECRET_VAR} && export {SECRET_VAR}).")
    server = make_server(secret, args.host, args.port)
    print(f"listening on http://{args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
