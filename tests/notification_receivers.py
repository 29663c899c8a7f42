"""Real receivers for the notification tests: an SMTP server (aiosmtpd) and an HTTP webhook receiver
(http.server), both on 127.0.0.1, recording what reached them."""

from __future__ import annotations

import email
import hashlib
import hmac
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | None = None  # the status the receiver answered; None: it never answered (the sender died)
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def signed_with(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-portal-signature-256", ""), expected)


@dataclass
class WebhookReceiver:
    """Answers each POST with the next status of `answers` (then 200); `hold` keeps the next request unanswered
    until `release` is set."""

    answers: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.answered is not None and 200 <= r.answered < 300]

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                receiver.requests.append(got)
                receiver.arrived.set()
                if receiver.hold.is_set():
                    receiver.hold.clear()
                    receiver.release.wait(60)
                    return  # the sender is gone: nothing is answered, nothing was delivered
                status = receiver.answers.pop(0) if receiver.answers else 200
                got.answered = status  # before the answer leaves: the sender may look the moment it has it
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    got.answered = None

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class TricklingReceiver:
    """A webhook that reads each request whole, then answers a byte a second (a long, slow 200): every read gets
    its byte well within a per-read timeout, so only a deadline on the whole exchange ends it."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n\r\n" + b"." * 40

    def __init__(self) -> None:
        self.keys: list[str] = []  # the Idempotency-Key of each request, in order
        self.port = free_port()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slow"

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
            headers = {k.lower(): v for k, v in headers.items()}
            while len(body) < int(headers.get("content-length", 0)):
                body += conn.recv(65536)
            self.keys.append(headers.get("idempotency-key", ""))
            for byte in self.ANSWER:
                if self._closed.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the sender gave up on it
                    return

    def __enter__(self) -> TricklingReceiver:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closed.set()
        self._sock.close()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self) -> None:
        self.mailbox = _Mailbox()
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[Message]:
        return self.mailbox.messages

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def parts(message: Message) -> dict[str, str]:
    """The e-mail's text by content type (text/plain, text/html)."""
    return {p.get_content_type(): p.get_payload(decode=True).decode() for p in message.walk()
            if not p.is_multipart()}


def confirm_address(portal: Any, user: Any, smtp: SmtpServer, address: str) -> str:
    """Open the link of the confirmation that reached `smtp` for `address`, as its owner would; the mail is then
    forgotten, so a test counts only what came after. Returns the code."""
    portal.sync.workers[0].deliver_due()
    [mail] = [m for m in smtp.messages if m["To"] == address and "Confirm your address" in m["Subject"]]
    found = re.search(r"/notifications\?confirm=([\w.-]+)", parts(mail)["text/plain"])
    assert found, parts(mail)["text/plain"]
    portal.notifications.confirm(user, found.group(1))
    smtp.messages.remove(mail)
    return found.group(1)
