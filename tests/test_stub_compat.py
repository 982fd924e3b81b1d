"""The generated Python stubs run on every protobuf/grpcio version our packages allow.

Generated code checks its runtime when imported: ``delivery_pb2.py`` calls
``ValidateProtobufRuntimeVersion(major, minor, patch)`` (the runtime must be that version or
newer, with the same major) and ``delivery_pb2_grpc.py`` refuses a grpcio older than its
``GRPC_GENERATED_VERSION``. If the generator is upgraded (tools/install-plugins.sh) without
raising the dependency floors, ``pip install`` can pick a runtime that the stubs reject at
import time. These tests read the guards out of the committed stubs and hold both the
sidecar's pyproject.toml and the client package's to them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "client_stubs" / "python" / "src"
PYPROJECTS = [ROOT / "pyproject.toml", ROOT / "client_stubs" / "python" / "pyproject.toml"]

_PROTOBUF_GUARD = re.compile(
    r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*"
    r"(\d+),\s*(\d+),\s*(\d+),\s*'([^']*)'"
)
_PROTOBUF_HEADER = re.compile(r"^# Protobuf Python Version: (\S+)$", re.MULTILINE)
_GRPC_GUARD = re.compile(r"^GRPC_GENERATED_VERSION = '([^']+)'$", re.MULTILINE)


def protobuf_guard(path: Path) -> Version:
    """The protobuf runtime version a generated ``_pb2.py`` file demands at import."""
    text = path.read_text(encoding="utf-8")
    call = _PROTOBUF_GUARD.search(text)
    header = _PROTOBUF_HEADER.search(text)
    assert call is not None, f"{path.name}: no ValidateProtobufRuntimeVersion call found"
    assert header is not None, f"{path.name}: no 'Protobuf Python Version' header found"
    major, minor, patch, suffix = call.groups()
    version = Version(f"{major}.{minor}.{patch}{suffix}")
    assert version == Version(header.group(1)), f"{path.name}: header and guard disagree"
    return version


def grpc_guard(path: Path) -> Version:
    """The grpcio version a generated ``_pb2_grpc.py`` file demands at import."""
    match = _GRPC_GUARD.search(path.read_text(encoding="utf-8"))
    assert match is not None, f"{path.name}: no GRPC_GENERATED_VERSION found"
    return Version(match.group(1))


def dependency(pyproject: Path, name: str) -> SpecifierSet:
    """The version specifier of ``name`` among the runtime dependencies of ``pyproject``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    for line in project.get("dependencies", []):
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == canonicalize_name(name):
            return requirement.specifier
    raise AssertionError(f"{pyproject.relative_to(ROOT)} does not depend on {name}")


def floor(specifier: SpecifierSet) -> Version | None:
    """The highest lower bound in ``specifier`` (>=, >, ==, ~=), or None if it has none."""
    bounds = [
        Version(spec.version)
        for spec in specifier
        if spec.operator in {">=", ">", "==", "~="} and "*" not in spec.version
    ]
    return max(bounds, default=None)


def floor_problem(specifier: SpecifierSet, needed: Version, *, same_major: bool) -> str | None:
    """Why ``specifier`` admits a version older than ``needed`` (or another major), or None."""
    lowest = floor(specifier)
    if lowest is None:
        return f"'{specifier}' has no lower bound; the stubs need >= {needed}"
    if lowest < needed:
        return f"'{specifier}' allows {lowest}; the stubs need >= {needed}"
    if same_major:
        if lowest.major != needed.major:
            return f"'{specifier}' starts at major {lowest.major}; the stubs need {needed.major}"
        next_major = Version(f"{needed.major + 1}.0.0")
        if specifier.contains(next_major, prereleases=False):
            return f"'{specifier}' allows {next_major}; the stubs need major {needed.major}"
    return None


def generated(pattern: str) -> list[Path]:
    files = sorted(STUBS.rglob(pattern))
    assert files, f"no generated {pattern} under {STUBS.relative_to(ROOT)}"
    return files


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_protobuf_floor_satisfies_generated_messages(pyproject: Path) -> None:
    """Every protobuf that pyproject allows passes the generated code's runtime check."""
    specifier = dependency(pyproject, "protobuf")
    for path in generated("*_pb2.py"):
        needed = protobuf_guard(path)
        problem = floor_problem(specifier, needed, same_major=True)
        assert problem is None, f"{pyproject.relative_to(ROOT)}: protobuf {problem} ({path.name})"


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_grpcio_floor_satisfies_generated_services(pyproject: Path) -> None:
    """Every grpcio that pyproject allows is new enough for the generated service stubs."""
    specifier = dependency(pyproject, "grpcio")
    for path in generated("*_pb2_grpc.py"):
        needed = grpc_guard(path)
        problem = floor_problem(specifier, needed, same_major=False)
        assert problem is None, f"{pyproject.relative_to(ROOT)}: grpcio {problem} ({path.name})"


@pytest.mark.parametrize(
    ("specifier", "needed", "same_major", "verdict"),
    [
        (">=7.35,<8", "7.35.1", True, "allows 7.35"),
        (">=7.35.1", "7.35.1", True, "allows 8.0.0"),
        ("<8", "7.35.1", True, "no lower bound"),
        (">=8.0,<9", "7.35.1", True, "starts at major 8"),
        (">=1.84,<2", "1.85.0", False, "allows 1.84"),
        (">=7.35.1,<8", "7.35.1", True, None),
        (">=1.85.0,<2", "1.85.0", False, None),
    ],
)
def test_floor_check_catches_a_raised_generator(
    specifier: str, needed: str, same_major: bool, verdict: str | None
) -> None:
    """The comparison used above rejects floors older than the generated code's guard."""
    problem = floor_problem(SpecifierSet(specifier), Version(needed), same_major=same_major)
    if verdict is None:
        assert problem is None
    else:
        assert problem is not None
        assert verdict in problem


def test_the_client_package_alone_ships_the_generated_modules() -> None:
    """The sidecar wheel is built from server/ only and depends on exactly this version of
    bluecore-sidecar-client, whose wheel holds ``datafly.bluecore.v1``."""
    sidecar = tomllib.loads(PYPROJECTS[0].read_text(encoding="utf-8"))
    client = tomllib.loads(PYPROJECTS[1].read_text(encoding="utf-8"))
    assert sidecar["tool"]["setuptools"]["packages"]["find"]["where"] == ["server"]
    assert "datafly.bluecore.v1" not in sidecar["tool"]["setuptools"].get("package-data", {})
    assert client["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]
    assert list(STUBS.glob("datafly/bluecore/v1/delivery_pb2.py"))
    pinned = dependency(PYPROJECTS[0], client["project"]["name"])
    assert str(pinned) == f"=={client['project']['version']}"
