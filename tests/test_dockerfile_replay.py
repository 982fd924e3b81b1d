"""The container image, checked without a Docker engine.

The build stage's RUN lines are read from the Dockerfile and run verbatim with ``sh -c``, after
its COPY lines have copied what .dockerignore lets into the build context; every absolute
image path is redirected under a temporary root through the Dockerfile's own ENV variables.
The result is started the way ENTRYPOINT/CMD start it: as PID 1 of a new PID namespace, as
the image's USER, with only the image's environment plus what the Kubernetes manifests set.
The runtime stage's own RUN line (adding the user, removing the base image's pip) changes the
operating system and is not replayed; its effect is asserted on the Dockerfile instead.

Needs PyPI (the pinned wheels are downloaded) and, to become PID 1 and another user, root
(``unshare`` and ``setpriv`` from util-linux), as in CI.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bluecore_sidecar.app import SERVICE_NAME
from bluecore_sidecar.config import SETTINGS, split_address
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import compiled_modules, eventually, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# Docker's PATH for a process whose image sets none, after the base image's python directory.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The build tools that must not reach the runtime image.
BUILD_TOOLS = {"pip", "setuptools", "wheel", "build", "pip-tools"}

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- Dockerfile model


@dataclasses.dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclasses.dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Return the global ARG defaults and the stages of a Dockerfile.

    Handles what this Dockerfile uses: comments, backslash continuations (with comment
    lines inside them, which Docker drops), and ``FROM image AS name``.
    """
    logical: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        joined = " ".join(part.strip() for part in pending if part.strip())
        pending = []
        keyword, _, args = joined.partition(" ")
        logical.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends inside a continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for inst in logical:
        if inst.keyword == "FROM":
            words = inst.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], words[0])
            stages.append(Stage(name, base, []))
        elif not stages:
            assert inst.keyword == "ARG", f"line {inst.line}: only ARG may come before FROM"
            key, _, value = inst.args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(inst)
    return global_args, stages


def env_pairs(args: str) -> list[tuple[str, str]]:
    """``ENV A=1 B="x y"`` as [(A, 1), (B, x y)]."""
    pairs = []
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"ENV {args!r}: use the KEY=VALUE form"
        pairs.append((key, value))
    return pairs


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)


# -------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    """The build-context filter: the last matching pattern wins; a match on a parent
    directory counts for everything under it; ``!`` lets a path back in."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[re.Pattern[str], bool]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((_pattern_regex(pattern), negate))

    def excludes(self, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for regex, negate in self.rules:
            if any(regex.match(p) for p in prefixes):
                excluded = not negate
        return excluded


# ------------------------------------------------------------------------------- the replay


@dataclasses.dataclass
class Image:
    """The replayed image: its root and how to start it."""

    rootfs: Path
    env: dict[str, str]  # the runtime stage's environment, paths redirected
    argv: list[str]  # ENTRYPOINT + CMD
    user: str
    app_venv: Path


def _base_python_dir() -> str:
    # The interpreter this venv was made from stands in for the base image's /usr/local/bin.
    return str(Path(getattr(sys, "_base_executable", sys.executable)).parent)


def _machine_env() -> dict[str, str]:
    """What the machine running `docker build` contributes: its network and CA settings.
    Anything that would steer pip or Python differently from the image is left out."""
    keep = {"PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_INDEX_URL", "PIP_TRUSTED_HOST"}
    env = {}
    for key, value in os.environ.items():
        network = key.endswith(("_PROXY", "_proxy")) or key.startswith("SSL_")
        if key in keep or network or key in ("REQUESTS_CA_BUNDLE", "LANG", "LC_ALL", "TMPDIR"):
            env[key] = value
    return env


class Replayer:
    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.mapped: dict[str, Path] = {}
        self.ignore = DockerIgnore((ROOT / ".dockerignore").read_text(encoding="utf-8"))

    def image_path(self, path: str) -> Path:
        """Where an absolute path of the image lives in the replay."""
        assert path.startswith("/"), path
        local = self.rootfs / path.lstrip("/")
        self.mapped[path.rstrip("/") or "/"] = local
        return local

    def redirect(self, value: str) -> str:
        """Redirect each absolute image path in a value (PATH-like lists included)."""
        parts = value.split(":")
        out = []
        for part in parts:
            hit = next(
                (
                    p
                    for p in sorted(self.mapped, key=len, reverse=True)
                    if part == p or part.startswith(p + "/")
                ),
                None,
            )
            out.append(str(self.mapped[hit]) + part[len(hit) :] if hit else part)
        return ":".join(out)

    def copy(self, sources: list[str], dest: Path) -> None:
        for source in sources:
            path = ROOT / source
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            kept = [f for f in files if not self.ignore.excludes(f.relative_to(ROOT).as_posix())]
            assert kept, f"COPY {source}: not in the build context (missing or .dockerignore'd)"
            for file in kept:
                if path.is_file():
                    target = dest / file.name if str(dest).endswith("/") or dest.is_dir() else dest
                else:
                    target = dest / file.relative_to(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)

    def build(self, stage: Stage) -> dict[str, str]:
        env: dict[str, str] = {}
        workdir = self.image_path("/")
        for inst in stage.instructions:
            if inst.keyword == "ENV":
                for key, raw in env_pairs(inst.args):
                    value = expand(raw, env)
                    if value.startswith("/"):
                        self.image_path(value)
                    env[key] = self.redirect(value)
            elif inst.keyword == "WORKDIR":
                workdir = self.image_path(inst.args)
                workdir.mkdir(parents=True, exist_ok=True)
            elif inst.keyword == "COPY":
                words = shlex.split(inst.args)
                assert not any(w.startswith("--") for w in words), f"line {inst.line}: COPY flag"
                dest = words[-1]
                target = self.image_path(dest) if dest.startswith("/") else workdir / dest
                if dest.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                self.copy(words[:-1], target)
            elif inst.keyword == "RUN":
                self.run(inst, env, workdir)
            else:
                assert inst.keyword in ("ARG", "LABEL"), f"line {inst.line}: {inst.keyword}?"
        return env

    def run(self, inst: Instruction, env: dict[str, str], workdir: Path) -> None:
        literal = re.search(r"(?:^|[\s=])(/[\w.-]+)", inst.args)
        assert literal is None, (
            f"Dockerfile line {inst.line}: literal path {literal and literal[1]}; use an ENV "
            "variable so this replay can redirect it"
        )
        full_env = {
            **_machine_env(),
            "HOME": str(self.rootfs / "root"),
            "PATH": f"{_base_python_dir()}:{DEFAULT_PATH}",
            **env,
        }
        done = subprocess.run(
            ["/bin/sh", "-c", inst.args],
            cwd=workdir,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, (
            f"Dockerfile line {inst.line} failed ({done.returncode}):\n{inst.args}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


def _exec_form(inst: Instruction) -> list[str]:
    try:
        value = json.loads(inst.args)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list), f"line {inst.line}: {inst.keyword} must be in exec form [...]"
    return [str(v) for v in value]


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def image(dockerfile: tuple[dict[str, str], list[Stage]]) -> Iterator[Image]:
    _, stages = dockerfile
    build, runtime = stages[0], stages[-1]
    # Under /tmp with 0755, not pytest's private tmp_path: the image's user must read it.
    rootfs = Path(tempfile.mkdtemp(prefix="bluecore-image-"))
    rootfs.chmod(0o755)
    try:
        replayer = Replayer(rootfs)
        build_env = replayer.build(build)
        env: dict[str, str] = {}
        for inst in runtime.instructions:
            if inst.keyword == "COPY":
                words = inst.args.split()
                assert words[0] == f"--from={build.name}", f"line {inst.line}: {inst.args}"
                source, dest = words[1:]
                # Both stages map image paths onto one root, so the copy is in place.
                assert source == dest, f"line {inst.line}: copy to the same path"
            elif inst.keyword == "ENV":
                for key, value in env_pairs(inst.args):
                    base_path = f"{_base_python_dir()}:{DEFAULT_PATH}"
                    env[key] = replayer.redirect(expand(value, {"PATH": base_path, **env}))
        argv = _exec_form(runtime.last("ENTRYPOINT")) + _exec_form(runtime.last("CMD"))
        yield Image(
            rootfs=rootfs,
            env=env,
            argv=argv,
            user=runtime.last("USER").args,
            app_venv=Path(build_env["APP_VENV"]),
        )
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


# ------------------------------------------------------------------------- static checks


def test_dockerfile_is_multi_stage_on_one_pinned_base(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """Two stages from the same tagged base, on the Python minor version the lock was made on."""
    _, stages = dockerfile
    assert [s.name for s in stages] == ["build", "runtime"]
    assert stages[0].base == stages[1].base
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim-\w+", stages[1].base)
    assert match, f"base {stages[1].base!r} should be a pinned python:X.Y.Z-slim-<debian> tag"
    lock_header = (ROOT / "requirements.lock").read_text(encoding="utf-8")[:400]
    lock_python = re.search(r"with Python (\d+)\.(\d+)", lock_header)
    assert lock_python, "requirements.lock names no Python version in its header"
    assert match.groups() == lock_python.groups()
    assert sys.version_info[:2] == tuple(int(g) for g in match.groups()), (
        "this replay must run on the image's Python minor version"
    )


def test_runtime_stage_runs_as_an_unprivileged_numeric_user(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """USER is a numeric non-root uid:gid (runAsNonRoot can verify it) that the image creates."""
    runtime = dockerfile[1][-1]
    uid, _, gid = runtime.last("USER").args.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    setup = " ".join(i.args for i in runtime.all("RUN"))
    assert f"--uid {uid}" in setup
    assert f"--gid {gid}" in setup
    copies = runtime.all("COPY")
    assert len(copies) == 1, "only the venv crosses over from the build stage"
    assert "--from=build" in copies[0].args


def test_entrypoint_is_exec_form_so_the_sidecar_is_pid_1(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """A shell-form ENTRYPOINT would make /bin/sh PID 1, and it would not pass SIGTERM on."""
    runtime = dockerfile[1][-1]
    assert _exec_form(runtime.last("ENTRYPOINT")) == ["bluecore-sidecar"]
    assert _exec_form(runtime.last("CMD")) == ["serve"]
    assert runtime.last("STOPSIGNAL").args == "SIGTERM"


def test_image_declares_the_default_ports_and_the_project_version(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """EXPOSE matches config.py's default addresses; the version label matches pyproject."""
    runtime = dockerfile[1][-1]
    exposed = {p.split("/")[0] for i in runtime.all("EXPOSE") for p in i.args.split()}
    defaults = {var.field: var.default for var in SETTINGS}
    ports = {str(split_address(str(defaults[k]))[1]) for k in ("grpc_address", "ops_address")}
    assert exposed == ports
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    version_arg = next(i.args for i in runtime.all("ARG") if i.args.startswith("VERSION="))
    assert version_arg == f"VERSION={project['version']}"


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    """The virtualenv, VCS data and caches never enter the build context."""
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text(encoding="utf-8"))
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_config.py",
        "server/bluecore_sidecar/__pycache__/app.cpython-311.pyc",
        "deploy/kubernetes",
    ):
        assert ignore.excludes(path), path
    for path in (
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "server/bluecore_sidecar/app.py",
        "client_stubs/python/pyproject.toml",
        "client_stubs/python/README.md",
        "client_stubs/python/src/datafly/bluecore/v1/delivery_pb2.py",
    ):
        assert not ignore.excludes(path), path


# ------------------------------------------------------------------------------- the replay


def _lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if match:
            pins[_normalise(match[1])] = match[2]
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.replay
def test_image_venv_holds_exactly_the_locked_packages(image: Image) -> None:
    """The runtime venv has the lock's pins plus the project and its client package (the one
    owner of the generated modules), and no installer or build tool."""
    python = image.app_venv / "bin" / "python"
    listing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json;"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": DEFAULT_PATH},
    )
    installed = {_normalise(k): v for k, v in json.loads(listing.stdout).items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    client = tomllib.loads((ROOT / "client_stubs/python/pyproject.toml").read_text("utf-8"))
    expected = {
        **_lock_pins(ROOT / "requirements.lock"),
        "bluecore-sidecar": project["version"],
        "bluecore-sidecar-client": client["project"]["version"],
    }
    assert installed == expected
    assert not BUILD_TOOLS & installed.keys()
    assert not (image.app_venv / "bin" / "pip").exists()


@pytest.mark.replay
def test_image_runs_the_hot_modules_compiled(image: Image) -> None:
    """The build stage compiled the modules pyproject.toml lists (setup.py, BLUECORE_COMPILE):
    the image's interpreter loads each of them from an extension module, not its source."""
    names = compiled_modules()
    script = (
        "import importlib, json, sys;"
        "print(json.dumps({n: importlib.import_module('bluecore_sidecar.' + n).__file__"
        " for n in sys.argv[1:]}))"
    )
    done = subprocess.run(
        [str(image.app_venv / "bin" / "python"), "-c", script, *names],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": DEFAULT_PATH},
    )
    origins = json.loads(done.stdout)
    assert sorted(origins) == sorted(names)
    for name, origin in origins.items():
        assert origin.endswith(".so"), f"{name} comes from {origin}"
        assert origin.startswith(str(image.app_venv)), f"{name} comes from {origin}"


async def _child_pid(parent: int) -> int:
    """The pid of ``parent``'s only child (unshare --fork's child, PID 1 inside)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    found = await eventually(
        lambda: children.read_text().split(), timeout=10, interval=0.05, what="unshare's child"
    )
    return int(found[0])


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.replay
async def test_image_serves_health_and_exits_0_on_sigterm_as_pid_1(
    image: Image, tmp_path: Path
) -> None:
    """Started like the container (PID 1, the image's user, its environment plus the pod's
    settings), the sidecar passes the probes and gRPC health, then drains on SIGTERM."""
    token = Path(tempfile.mkdtemp(prefix="bluecore-secret-")) / "namespace"
    token.parent.chmod(0o755)
    token.write_text("replay-namespace-token\n", encoding="utf-8")
    token.chmod(0o444)
    grpc_port, ops_port = free_port(), free_port()
    env = {
        **image.env,
        "HOME": "/nonexistent",
        "BLUECORE_NAMESPACE_FILE": str(token),
        "SIDECAR_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
        "SIDECAR_OPS_ADDRESS": f"127.0.0.1:{ops_port}",
        "SIDECAR_HTTP_ADDRESS": "",  # the JSON door is off: no third port to pick
        "SIDECAR_SHUTDOWN_GRACE": "5s",
    }
    program = shutil.which(image.argv[0], path=env["PATH"])
    assert program is not None
    assert program.startswith(str(image.rootfs)), program
    argv = [program, *image.argv[1:]]
    uid, _, gid = image.user.partition(":")
    as_root = os.geteuid() == 0
    if as_root:
        # Like the runtime: a new PID namespace whose PID 1 is the sidecar, running as USER.
        argv = [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
            *argv,
        ]
    log_path = tmp_path / "sidecar.log"
    with (
        log_path.open("wb") as log,
        # The replay blocks on purpose: nothing else runs on this loop while the child serves.
        subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/") as proc,  # noqa: ASYNC220
    ):
        try:
            sidecar_pid = await _child_pid(proc.pid) if as_root else proc.pid

            def ready() -> bool:
                assert proc.poll() is None, log_path.read_text(errors="replace")
                try:
                    return _get(ops_port, "/readyz")[0] == 200
                except OSError:
                    return False

            try:
                await eventually(ready, timeout=60, interval=0.1, what="/readyz answering 200")
            except AssertionError as late:
                raise AssertionError(log_path.read_text(errors="replace")) from late

            status = _proc_status(sidecar_pid)
            if as_root:
                assert status["NSpid"].split()[-1] == "1", status["NSpid"]
                assert status["Uid"].split()[0] == uid
            assert status["Uid"].split()[0] != "0"

            assert _get(ops_port, "/healthz")[0] == 200
            assert _get(ops_port, "/readyz")[0] == 200
            code, body = _get(ops_port, "/metrics")
            assert code == 200
            assert b"bluecore_sidecar_" in body
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", SERVICE_NAME):
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

            os.kill(sidecar_pid, signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log_path.read_text(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(token.parent, ignore_errors=True)
    logs = log_path.read_text(errors="replace")
    assert '"message":"stopped"' in logs.replace(" ", "")
    assert "replay-namespace-token" not in logs
