"""Builds the package as pyproject.toml describes it; with ``BLUECORE_COMPILE=1`` the modules
listed in ``[tool.bluecore-sidecar] compiled-modules`` are compiled with mypyc as well.

The compiled modules behave as their source does (the test suite runs against them in
``make test-compiled``) and cost less CPU per event; the image sets the variable, an editable
install for development does not. mypy reads the types of the installed dependencies from
the interpreter running the build (the image's build stage installs them there too).
"""

import os
import tomllib
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent

if os.environ.get("BLUECORE_COMPILE") == "1":
    from mypyc.build import mypycify

    settings = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))
    modules = settings["tool"]["bluecore-sidecar"]["compiled-modules"]
    setup(
        ext_modules=mypycify(
            [f"server/bluecore_sidecar/{name}.py" for name in modules],
            opt_level="3",
        )
    )
else:
    setup()
