"""The one backend failure that is worth waiting out: the backend cannot be reached (or is overloaded) now."""

from __future__ import annotations

from services.backends.base import BackendError


class BackendUnreachable(BackendError):
    """Asking again later may succeed. The message names what cannot be reached, without a full stop, so the
    caller can say what happens next ("The cluster cannot be reached; the job will be submitted when it is back.")."""
