"""The README's settings table and the code's (config.SETTINGS) say the same thing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from bluecore_sidecar.config import REQUIRED, SETTINGS, UNSET, Settings, Var

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_rows(text: str) -> list[tuple[tuple[str, ...], str]]:
    """(variables, default cell) of each row of the table under '## Configuration'."""
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        names = tuple(re.findall(r"`([A-Z0-9_*]+)`", cells[0]))
        if names == ("OTEL_*",):  # left to the OpenTelemetry SDK, not ours
            continue
        rows.append((names, cells[1]))
    return rows


def code_row(var: Var) -> tuple[tuple[str, ...], str]:
    names = (var.name, f"{var.name}_FILE") if var.file else (var.name,)
    if var.default is REQUIRED:
        return names, "(required)"
    return names, "(unset)" if var.default == UNSET else f"`{var.default}`"


def test_readme_lists_every_setting_with_its_default_in_table_order():
    assert readme_rows(README.read_text(encoding="utf-8")) == [code_row(v) for v in SETTINGS]


def test_the_comparison_notices_a_wrong_default():
    """A README that drifted (here: an old default) no longer matches."""
    drifted = README.read_text(encoding="utf-8").replace("| `65536` |", "| `32768` |")
    assert readme_rows(drifted) != [code_row(v) for v in SETTINGS]


@pytest.mark.parametrize("group", ["gates", "retry", "rules"])
def test_policy_defaults_agree_with_the_table(group):
    """The policy classes keep defaults for direct use; they must not drift from the table."""
    policy = type(getattr(Settings.from_env({"BLUECORE_NAMESPACE": "t"}), group))
    defaults = {
        f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(policy)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    rows = [var for var in SETTINGS if var.field.partition(".")[0] == group]
    assert rows
    for var in rows:
        attribute = var.field.partition(".")[2]
        assert defaults[attribute] == var.parse(var.default), var.name
