"""Scrubbing of secrets and email addresses from text bound for logs, spans and details."""

from __future__ import annotations

import re
from collections.abc import Iterable

_EMAIL = re.compile(r"[^\s\"'<>@,;:()\[\]]+@[^\s\"'<>@,;:()\[\]]+")
EXCERPT_LIMIT = 200


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each secret replaced by ``***`` and each email-shaped run by ``<email>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    # Most text has no "@" at all: skip the regex then (it runs for every logged outcome).
    return _EMAIL.sub("<email>", text) if "@" in text else text


def excerpt(text: str, secrets: Iterable[str] = (), limit: int = EXCERPT_LIMIT) -> str:
    """A scrubbed, whitespace-folded excerpt of at most ``limit`` characters (plus an ellipsis)."""
    text = " ".join(scrub(text, secrets).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text
