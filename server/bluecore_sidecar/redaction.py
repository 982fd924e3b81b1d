"""Scrubbing of secrets and email addresses from text bound for logs, spans and details.

A :class:`Redactor` replaces every occurrence of the secrets it is given (the namespace token)
with ``***`` and every email address, quoted local parts included, with a tag such as
``<email:3f9a1c2b0d4e>``. The tag is the start of an HMAC-SHA256 of the lower-cased address
under a key drawn at random when the process starts: the same address gets the same tag in
every log line, span and detail of one process, so an id that carried an email stays
traceable, but a tag cannot be turned back into the address and tags from two processes (or
from before and after a restart) cannot be compared.

Every scan is linear in the length of its input, and the input is cut to a fixed length
(``SCAN_LIMIT``) first, so text from a caller or from Bluecore costs the event loop a bounded
amount of work however it is built. An address or token that starts before the cut is still
replaced whole, never kept in halves.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable

from .results import CUT_MARKER

#: Characters kept of any one text (a log field, a span attribute, a detail).
SCAN_LIMIT = 1024
#: Characters kept of an upstream answer or exception text quoted in a detail.
EXCERPT_LIMIT = 200
#: How far past the cut an address that starts before it is still found (RFC 5321 allows
#: 64 + 1 + 255 characters).
_PAD = 512
#: Hex digits of the keyed hash in an email tag: 48 bits, so two addresses of one process
#: share a tag only after millions of distinct addresses.
_TAG_HEX = 12
_TAG_LEN = len("<email:>") + _TAG_HEX
#: A text that ends in at least this many leading characters of a secret (or all but its
#: last) had the secret cut off by whoever shortened it: that tail goes too.
_SECRET_TAIL = 8
#: Drawn once per process and never configured or written anywhere: a key that outlived the
#: process would let tags from different processes, or from before a restart, be matched.
_PROCESS_KEY = os.urandom(32)

# The run of characters that can belong to an unquoted local part or a domain. One
# character-class star, only ever matched at a given position, so each match is one pass
# over the run with no backtracking.
_RUN = re.compile(r"[^\s\"'<>@,;:()\[\]]*")


class Redactor:
    """Replaces secrets and email addresses in text; cheap to call, safe to share.

    ``secrets`` is a replaceable attribute: assign a new collection when the namespace token
    rotates (both the old and the new token while both may still appear). Each call may add
    more secrets of its own.
    """

    def __init__(
        self, secrets: Iterable[str] = (), *, key: bytes = _PROCESS_KEY, limit: int = SCAN_LIMIT
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self._key = key
        self.limit = limit
        self._secrets = _normalise(secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The exact values replaced by ``***``, longest first (empty values dropped)."""
        return self._secrets

    @secrets.setter
    def secrets(self, values: Iterable[str]) -> None:
        self._secrets = _normalise(values)

    def email_tag(self, email: str) -> str:
        """The tag that stands for ``email`` in this process (case-insensitive)."""
        digest = hmac.new(
            self._key, email.lower().encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()
        return f"<email:{digest[:_TAG_HEX]}>"

    def scrub(self, text: str, secrets: Iterable[str] = (), *, limit: int | None = None) -> str:
        """``text`` without secrets or emails, at most ``limit`` characters plus a cut marker."""
        limit = self.limit if limit is None else limit
        every = _normalise((*self._secrets, *secrets)) if secrets else self._secrets
        size = len(text)
        if size <= limit:
            if "@" not in text and not _mentions(text, every):
                return text  # the common case: nothing to find, nothing to copy
            window, keep = text, size
        else:
            longest = len(every[0]) if every else 0
            window, keep = text[: limit + max(_PAD, longest)], limit
        if size <= limit:
            window, keep = _hide_secret_tail(window, every), len(window)
        window, keep = _hide_secrets(window, every, keep)
        out = self._hide_emails(window, keep)
        if size > limit or len(out) > limit:
            # Tags can be longer than the short addresses they replace; the result stays
            # bounded all the same. Cutting scrubbed text cannot expose anything, but half a
            # tag would read as noise, so a tag the cut runs through goes whole.
            cut = limit
            tag = out.rfind("<email:", max(0, limit - _TAG_LEN + 1), limit)
            if tag != -1 and out.find(">", tag, limit) == -1:
                cut = tag
            out = out[:cut] + f"[cut: {size} chars]"
        return out

    def excerpt(self, text: str, secrets: Iterable[str] = (), limit: int = EXCERPT_LIMIT) -> str:
        """A scrubbed, whitespace-folded excerpt of at most ``limit`` characters (plus ``...``)."""
        folded = " ".join(self.scrub(text, secrets, limit=max(self.limit, limit)).split())
        # The ellipsis follows a space: glued to "name@" it would read as an address.
        return folded if len(folded) <= limit else folded[:limit] + " ..."

    def _hide_emails(self, text: str, keep: int) -> str:
        """``text[:keep]`` with each address replaced by its tag (whole, even if it runs past)."""
        if "@" not in text:
            return text[:keep]
        pieces: list[str] = []
        done = 0
        for start, end in _email_spans(text):
            if start >= keep:
                break
            pieces.append(text[done:start])
            pieces.append(self.email_tag(text[start:end]))
            done = end
        if done < keep:
            pieces.append(text[done:keep])
        return "".join(pieces)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each secret replaced by ``***`` and each email by its tag (bounded)."""
    return _PLAIN.scrub(text, secrets)


def excerpt(text: str, secrets: Iterable[str] = (), limit: int = EXCERPT_LIMIT) -> str:
    """A scrubbed, whitespace-folded excerpt of at most ``limit`` characters (plus ``...``)."""
    return _PLAIN.excerpt(text, secrets, limit)


def _normalise(values: Iterable[str]) -> tuple[str, ...]:
    # Longest first: a secret that contains another is replaced whole.
    return tuple(sorted({value for value in values if value}, key=lambda s: (-len(s), s)))


def _mentions(text: str, secrets: tuple[str, ...]) -> bool:
    """Whether :func:`_hide_secrets` or :func:`_hide_secret_tail` could change ``text``.

    The same searches as theirs, without building anything: most texts (event names, the
    usual details) hold no secret, and this answers for them in one or two ``find`` calls.
    """
    for secret in secrets:
        if secret in text:
            return True
        shortest = min(_SECRET_TAIL, len(secret) - 1)
        if shortest >= 1 and text.find(secret[:shortest], max(0, len(text) - len(secret) + 1)) >= 0:
            return True
    return False


def _hide_secrets(text: str, secrets: tuple[str, ...], keep: int) -> tuple[str, int]:
    """``text`` with each secret replaced by ``***``, and where ``keep`` lands in the result.

    A secret that straddles ``keep`` is replaced whole and ``keep`` moves past its ``***``.
    """
    if not secrets:
        return text, keep
    found: list[tuple[int, int]] = []
    for secret in secrets:
        # str.find is linear in CPython (two-way search for long needles), and each secret's
        # search resumes after its previous hit.
        at = text.find(secret)
        while at != -1:
            found.append((at, at + len(secret)))
            at = text.find(secret, at + len(secret))
    if not found:
        return text, keep
    found.sort()
    pieces: list[str] = []
    length = done = 0
    new_keep = -1
    for start, end in found:
        if end <= done:
            continue  # inside a longer secret already replaced
        if start < done:  # overlaps the previous one: extend its ***
            done = end
            if new_keep < 0 and end >= keep:
                new_keep = length
            continue
        if new_keep < 0 and start >= keep:
            new_keep = length + keep - done
        pieces.append(text[done:start])
        pieces.append("***")
        length += start - done + 3
        done = end
        if new_keep < 0 and end >= keep:
            new_keep = length
    pieces.append(text[done:])
    if new_keep < 0:
        new_keep = length + keep - done
    return "".join(pieces), new_keep


def _hide_secret_tail(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without a trailing start of a secret (a message id cut to its limit).

    A result field cut to its bound ends in the cut marker; the secret's start sits just
    before it.
    """
    if text.endswith(CUT_MARKER):
        body = _hide_secret_tail(text[: -len(CUT_MARKER)], secrets)
        return body + CUT_MARKER
    for secret in secrets:
        shortest = min(_SECRET_TAIL, len(secret) - 1)
        if shortest < 1:
            continue
        # Candidates are the places in the last len(secret) - 1 characters where the
        # secret's first characters start; at most len(secret) of them, each checked once.
        at = text.find(secret[:shortest], max(0, len(text) - len(secret) + 1))
        while at != -1:
            if secret.startswith(text[at:]):
                return text[:at] + "***"
            at = text.find(secret[:shortest], at + 1)
    return text


def _email_spans(text: str) -> list[tuple[int, int]]:
    """Where the addresses in ``text`` are, in order, without overlaps.

    Quoted local parts (``"a b"@example.org``) are found first, then plain addresses in the
    text between them. Each character is looked at a bounded number of times.
    """
    quoted = _quoted_spans(text)
    spans: list[tuple[int, int]] = []
    reverse = text[::-1]
    low = 0
    for start, end in [*quoted, (len(text), len(text))]:
        spans.extend(_plain_spans(text, reverse, low, start))
        if start < end:
            spans.append((start, end))
        low = end
    return spans


def _quoted_spans(text: str) -> list[tuple[int, int]]:
    """Addresses whose local part is a quoted string: ``"..."@domain``."""
    spans: list[tuple[int, int]] = []
    floor = 0
    close = text.find('"@')
    while close != -1:
        # The opening quote: the nearest unescaped one before the closing quote. The search
        # never goes below the previous candidate, so no character is searched twice.
        nearest = opening = text.rfind('"', floor, close)
        while opening > floor and _escaped(text, opening, floor):
            opening = text.rfind('"', floor, opening)
        if opening == -1:
            opening = nearest  # a backslash before an opening quote: hide more, not less
        end = _domain_end(text, close + 2, len(text))
        # An empty "" is no local part: more likely the end of one string and the start of
        # another, so its quote is left to open the next candidate.
        if opening == -1 or close == opening + 1 or end == close + 2:
            floor = close
            close = text.find('"@', close + 1)
            continue
        # A "domain" that runs into another '"@' sat inside a longer quoted local part:
        # the address ends after the last of them.
        while text.startswith('"@', run_end := _run_end(text, end)):
            longer = _domain_end(text, run_end + 2, len(text))
            if longer == run_end + 2:
                break
            close, end = run_end, longer
        spans.append((opening, end))
        floor = end
        close = text.find('"@', close + 1)
    return spans


def _escaped(text: str, index: int, floor: int) -> bool:
    """Whether ``text[index]`` follows an odd number of backslashes (not below ``floor``)."""
    slashes = 0
    while index - slashes - 1 >= floor and text[index - slashes - 1] == "\\":
        slashes += 1
    return slashes % 2 == 1


def _plain_spans(text: str, reverse: str, low: int, high: int) -> list[tuple[int, int]]:
    """Unquoted addresses lying wholly in ``text[low:high]``."""
    spans: list[tuple[int, int]] = []
    size = len(text)
    floor = low
    at = text.find("@", low, high)
    while at != -1:
        # The local part runs back from the "@": matched forwards on the reversed text, and
        # never below the end of the previous address or "@", so each character is read once.
        run = _RUN.match(reverse, size - at, size - floor)
        start = at - (run.end() - (size - at)) if run else at
        end = _domain_end(text, at + 1, high)
        if start < at and end > at + 1:
            spans.append((start, end))
            floor = end
        else:
            floor = at + 1
        at = text.find("@", floor, high)
    return spans


def _run_end(text: str, start: int) -> int:
    run = _RUN.match(text, start)
    return run.end() if run else start


def _domain_end(text: str, start: int, high: int) -> int:
    """End of the domain that starts at ``start``, without trailing dots (a full stop)."""
    run = _RUN.match(text, start, high)
    end = run.end() if run else start
    trimmed = end
    while trimmed > start and text[trimmed - 1] == ".":
        trimmed -= 1
    return trimmed if trimmed > start else end


# The redactor behind the module-level functions: no secrets of its own, the process key.
_PLAIN = Redactor()
