"""Token files laid out the two ways an operator rotates them, for the rotation tests and faults.

A plain file rewritten in place (``echo new > file`` truncates and writes the same inode), and
the layout the kubelet gives a Secret volume: ``<key> -> ..data/<key>``, ``..data -> ..<stamp>/``,
updated by writing a new timestamped directory and renaming a fresh ``..data`` symlink over the
old one, so a reader sees either the whole old token or the whole new one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

KEY = "namespace"


def plain_file(root: Path, token: str, key: str = KEY) -> Path:
    """``root/key`` holding ``token``; returns its path."""
    path = root / key
    path.write_text(token + "\n")
    return path


def rewrite_in_place(root: Path, token: str, key: str = KEY) -> None:
    """Truncate ``root/key`` and write ``token`` into the same inode."""
    with (root / key).open("w") as out:
        out.write(token + "\n")


def kubelet_volume(root: Path, token: str, key: str = KEY) -> Path:
    """A Secret volume under ``root`` holding ``token`` as ``key``; returns the path apps read."""
    root.mkdir(parents=True, exist_ok=True)
    first = root / "..2026_12_01_20_00_00.000000001"
    first.mkdir()
    (first / key).write_text(token + "\n")
    (root / "..data").symlink_to(first.name)
    (root / key).symlink_to(f"..data/{key}")
    return root / key


def kubelet_swap(root: Path, token: str, key: str = KEY) -> None:
    """The kubelet's update: a new stamped directory, ``..data`` renamed onto it, old removed."""
    old = (root / "..data").resolve()
    second = root / "..2026_12_01_20_05_00.000000002"
    second.mkdir()
    (second / key).write_text(token + "\n")
    (root / "..data_tmp").symlink_to(second.name)
    os.replace(root / "..data_tmp", root / "..data")
    shutil.rmtree(old)
