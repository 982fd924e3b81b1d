"""FileCredential on its own, on fake time: when it looks at the file and what it keeps."""

from __future__ import annotations

from pathlib import Path

from bluecore_sidecar.credential import Credential, FileCredential


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rotation_is_seen_only_once_the_check_interval_has_passed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    clock = Clock()
    learned: list[tuple[str, ...]] = []
    credential = FileCredential(
        path, "first", check_every=5.0, on_change=learned.append, clock=clock
    )
    path.write_text("second\n")
    clock.now += 4.9
    assert credential.current() == "first"  # not due yet: no look at the file
    clock.now += 0.2
    assert credential.current() == "second"
    assert learned == [("second", "first")]


def test_refresh_reads_at_once_and_says_whether_the_token_changed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    credential = FileCredential(path, "first", check_every=3600.0, clock=Clock())
    assert credential.refresh() is False
    path.write_text("second\n")
    assert credential.refresh() is True
    assert credential.current() == "second"
    assert credential.secrets() == ("second", "first")


def test_returning_to_an_earlier_token_keeps_each_secret_once(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a\n")
    credential = FileCredential(path, "a", check_every=3600.0, clock=Clock())
    for token in ("b", "a", "c"):
        path.write_text(token + "\n")
        assert credential.refresh() is True
    assert credential.secrets() == ("c", "a", "b")


def test_the_repr_never_shows_the_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cr3t\n")
    for credential in (Credential("s3cr3t"), FileCredential(path, "s3cr3t", check_every=1.0)):
        assert "s3cr3t" not in repr(credential)
    assert Credential("s3cr3t").refresh() is False
