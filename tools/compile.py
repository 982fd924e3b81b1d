"""Build the sidecar as the image ships it (hot modules compiled with mypyc) into a directory
that can go first on ``PYTHONPATH``: ``make compiled``, used by ``make bench`` and
``make test-compiled``.

It builds the project's wheel with ``BLUECORE_COMPILE=1`` (setup.py), as the Dockerfile does,
and unpacks it into ``.cache/compiled/site``. The directory is rebuilt only when the sources
it is made from change (a hash of ``server/``, ``pyproject.toml`` and ``setup.py``, kept in
``.cache/compiled/source-hash``). Prints the directory on its last line.

Run: ``.venv/bin/python tools/compile.py [--force]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".cache" / "compiled"
SITE = OUT / "site"
STAMP = OUT / "source-hash"


def source_hash() -> str:
    """A hash of everything the compiled build is made from."""
    digest = hashlib.sha256()
    files = sorted(p for p in (ROOT / "server").rglob("*") if p.is_file() and p.suffix != ".pyc")
    for path in [ROOT / "pyproject.toml", ROOT / "setup.py", *files]:
        if "__pycache__" in path.parts or any(p.endswith(".egg-info") for p in path.parts):
            continue  # byte code, and the editable install's metadata
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def build() -> Path:
    """Build (or reuse) the compiled site directory; return it."""
    wanted = source_hash()
    if SITE.is_dir() and STAMP.is_file() and STAMP.read_text().strip() == wanted:
        print(f"compile: {SITE} is up to date", file=sys.stderr)
        return SITE
    print("compile: building the wheel with mypyc (1-3 minutes on 2 cores)", file=sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bluecore-compile-") as tmp:
        wheels = Path(tmp)
        env = {**os.environ, "BLUECORE_COMPILE": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"),
                *("--no-build-isolation", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        # setuptools leaves its build tree in the source directory.
        shutil.rmtree(ROOT / "build", ignore_errors=True)
        if done.returncode != 0:
            output = done.stdout[-4000:] + done.stderr[-4000:]
            sys.exit(f"compile: the wheel did not build:\n{output}")
        [wheel] = wheels.glob("bluecore_sidecar-*.whl")
        shutil.rmtree(SITE, ignore_errors=True)
        SITE.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(SITE)
    # The development tools (demo, sandbox) are not compiled and find files of this work tree
    # relative to themselves: they keep coming from the source.
    shutil.rmtree(SITE / "bluecore_devtools")
    compiled = sorted(p.name for p in (SITE / "bluecore_sidecar").glob("*.so"))
    if not compiled:
        sys.exit("compile: the wheel holds no compiled module")
    STAMP.write_text(wanted + "\n")
    took = time.monotonic() - started
    print(f"compile: {len(compiled)} modules compiled in {took:.0f} s into {SITE}", file=sys.stderr)
    return SITE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args()
    if args.force:
        STAMP.unlink(missing_ok=True)
    print(build())


if __name__ == "__main__":
    main()
