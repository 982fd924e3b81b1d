"""The namespace token: the one write credential, fixed or read from a file that may rotate.

:class:`Credential` holds a fixed token. :class:`FileCredential` follows a file
(``BLUECORE_NAMESPACE_FILE``): it re-reads it when the file's identity changes, checked with
one ``stat`` at most every ``check_every`` seconds, and at once when Bluecore refuses the
token (:meth:`Credential.refresh`). Both an in-place rewrite and a Kubernetes Secret update
(the kubelet's atomic ``..data`` symlink swap) change that identity: ``stat`` follows the
symlinks to the file that currently holds the token. A file that cannot be read or holds no
valid token leaves the last good token in use and logs an ERROR (never the value).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("bluecore_sidecar")

#: Most characters a namespace token may have (the same rule as at start-up).
MAX_TOKEN_LENGTH = 256
#: Most bytes of the token file read (room for a token, surrounding blanks and a newline).
_MAX_FILE_BYTES = 4096
#: Earlier tokens kept for scrubbing: a rotated-out token may still echo back in an answer.
_KEEP_SECRETS = 8


def token_problem(value: str) -> str | None:
    """Why ``value`` (already stripped) is not a usable token, or ``None`` if it is.

    The text describes the value without quoting it: it is a secret.
    """
    if not value:
        return "is empty"
    if any(ch.isspace() for ch in value) or len(value) > MAX_TOKEN_LENGTH:
        return f"must be a single token without spaces, at most {MAX_TOKEN_LENGTH} characters"
    return None


class Credential:
    """A fixed namespace token, read where it is used: :meth:`current` at each serialisation.

    Its repr never shows the token.
    """

    def __init__(self, token: str) -> None:
        self._token = token

    def current(self) -> str:
        """The token to put on the next request."""
        return self._token

    def refresh(self) -> bool:
        """Look for a new token now (Bluecore refused this one); ``True`` if it changed."""
        return False

    def secrets(self) -> tuple[str, ...]:
        """Every token this credential has held, current first: all must be scrubbed."""
        return (self._token,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(***)"


_Identity = tuple[int, int, int, int, int]


class FileCredential(Credential):
    """The token in ``path``, re-read when the file changes; see the module docstring.

    ``token`` is the value already read at start-up (the configuration check). When a new
    token is taken, ``on_change`` gets :meth:`secrets` (for the log and span redactor).
    """

    def __init__(
        self,
        path: Path,
        token: str,
        *,
        check_every: float,
        on_change: Callable[[tuple[str, ...]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token)
        self._path = path
        self._check_every = check_every
        self._on_change = on_change
        self._clock = clock
        self._earlier: list[str] = []
        self._identity = self._stat()
        self._checked_at = clock()
        self._bad: _Identity | bool | None = False  # False: the file is fine

    def current(self) -> str:
        """The token to use now, after a cheap look at the file when one is due."""
        if self._clock() - self._checked_at >= self._check_every:
            self._check(force=False)
        return self._token

    def refresh(self) -> bool:
        """Re-read the file now, whatever its identity says; ``True`` if the token changed."""
        return self._check(force=True)

    def secrets(self) -> tuple[str, ...]:
        """The current token, then the earlier ones (most recent first)."""
        return (self._token, *self._earlier)

    def _stat(self) -> _Identity | None:
        try:
            st = os.stat(self._path)  # follows the ..data symlinks to the live file
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _check(self, *, force: bool) -> bool:
        self._checked_at = self._clock()
        identity = self._stat()
        if identity is not None and identity == self._identity and not force:
            return False
        self._identity = identity
        problem: str | None
        try:
            # Bounded: a wrong mount could put a huge file here, and this runs on the loop.
            with self._path.open("rb") as file:
                raw = file.read(_MAX_FILE_BYTES + 1)
            if len(raw) > _MAX_FILE_BYTES:
                raise ValueError(f"the file is longer than {_MAX_FILE_BYTES} bytes")
            value = raw.decode("utf-8").strip()
        except ValueError as exc:  # UnicodeDecodeError included
            problem = str(exc) if not isinstance(exc, UnicodeDecodeError) else "is not UTF-8"
        except OSError as exc:
            problem = (
                f"cannot read the file: {getattr(exc, 'strerror', None) or type(exc).__name__}"
            )
        else:
            problem = token_problem(value)
        if problem is not None:
            # A rewrite in place is briefly empty; log each bad state of the file once.
            if self._bad is False or identity != self._bad:
                self._bad = identity
                log.error(
                    "namespace token file unusable; keeping the last good token",
                    extra={"fields": {"variable": "BLUECORE_NAMESPACE_FILE", "problem": problem}},
                )
            return False
        self._bad = False
        if value == self._token:
            return False
        self._earlier = [self._token, *[t for t in self._earlier if t != value]][:_KEEP_SECRETS]
        self._token = value
        log.info(
            "namespace token changed; using the new one",
            extra={"fields": {"variable": "BLUECORE_NAMESPACE_FILE"}},
        )
        if self._on_change is not None:
            self._on_change(self.secrets())
        return True
