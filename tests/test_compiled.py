"""Which build of the hot modules the suite runs against: the source under ``make test``, the
mypyc-compiled build the image ships under ``make test-compiled`` (which sets
``BLUECORE_EXPECT_COMPILED=1``), so neither run can pass on the other's modules."""

import importlib
import os
from pathlib import Path

from .conftest import PROJECT, compiled_modules


def test_the_compiled_list_names_modules_of_the_package():
    names = compiled_modules()
    assert names, "pyproject.toml lists no compiled module"
    for name in names:
        assert (PROJECT / "server" / "bluecore_sidecar" / f"{name}.py").is_file(), name


def test_the_hot_modules_come_from_the_expected_build():
    expect_compiled = os.environ.get("BLUECORE_EXPECT_COMPILED") == "1"
    for name in compiled_modules():
        module = importlib.import_module(f"bluecore_sidecar.{name}")
        origin = Path(module.__file__ or "")
        assert (origin.suffix == ".so") is expect_compiled, f"{name} loaded from {origin}"
