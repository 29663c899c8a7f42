"""How one message leaves: a signed JSON POST to a webhook, or an e-mail over SMTP, each within a wall-clock
deadline whatever the receiver does.

httpx's and smtplib's timeouts are per step (connect, each read): a receiver that answers one byte a second never
trips them and would hold its sender for as long as it likes. The POST therefore runs under anyio.fail_after (which
cancels it), and an SMTP conversation past its deadline has its socket shut, which ends the blocked read at once."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import smtplib
import socket
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import anyio
import httpx

from services.config import Settings
from services.notifications_messages import Message

SIGNATURE_HEADER = "X-Portal-Signature-256"


class DeliveryFailed(Exception):
    """A sentence saying why a message did not arrive (shown on the channel)."""


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header: receivers compute the same HMAC-SHA256 over the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_json(url: str, body: bytes, headers: dict[str, str], deadline: float) -> int:
    """POST within `deadline` seconds in all (connecting, sending, the whole answer); returns the status code."""

    async def post() -> int:
        with anyio.fail_after(deadline):
            # No redirects: a host on the allow-list must not hand the request on to one that is not.
            async with httpx.AsyncClient(timeout=deadline, follow_redirects=False) as client:
                return (await client.post(url, content=body, headers=headers)).status_code

    try:
        return anyio.run(post)
    except TimeoutError:
        raise DeliveryFailed(f"the webhook did not answer within {deadline:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"the webhook could not be reached ({type(exc).__name__})") from None


def send_email(settings: Settings, to: str, msg: Message, key: str, deadline: float) -> str:
    """Hand the e-mail to the SMTP server within `deadline` seconds in all; returns what to show on the channel."""
    st = settings
    if not st.smtp_host:
        raise DeliveryFailed("this portal has no SMTP server set up (PORTAL_SMTP_HOST)")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = st.smtp_from, to, msg.subject
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<{key}@ml-job-portal>"  # the idempotency key: mail clients drop a repeated id
    mail["Idempotency-Key"] = key
    mail.set_content(msg.text)
    mail.add_alternative(msg.html, subtype="html")
    smtp = smtplib.SMTP(timeout=deadline)
    cut = threading.Event()

    def cut_off() -> None:
        cut.set()
        sock = getattr(smtp, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(deadline, cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        smtp.connect(st.smtp_host, st.smtp_port)
        if st.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if st.smtp_user:
            smtp.login(st.smtp_user, smtp_password(st))
        smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        smtp.close()
        if cut.is_set():
            raise DeliveryFailed(f"the SMTP server did not finish within {deadline:g} s") from None
        raise DeliveryFailed(f"the SMTP server refused or could not be reached ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
    except BaseException:  # the password file (a sentence of its own)
        smtp.close()
        raise
    finally:
        watchdog.cancel()
    try:  # the server has the message: a failed goodbye changes nothing
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        smtp.close()
    return f"accepted by {st.smtp_host}"


def smtp_password(settings: Settings) -> str:
    path = settings.smtp_password_file
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise DeliveryFailed(f"the SMTP password file could not be read ({exc.strerror})") from None
