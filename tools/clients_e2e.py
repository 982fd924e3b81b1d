"""Build every language's example client and prove each one against a live sidecar.

For Go, Java, TypeScript (Node) and Python this compiles the example under
``client_stubs/<lang>/examples`` with the language's own toolchain (go, mvn, npm + tsc, pip);
``connect-node`` is the same for a Connect-protocol client (connectrpc's own
``@connectrpc/connect-node``) calling the sidecar's HTTP door, and ``curl`` runs the README's
curl snippet against ``POST /v1/events``. Then it starts the Bluecore sandbox and
``bluecore-sidecar serve`` on free loopback ports, runs each example against the sidecar and
checks, through the sandbox's control API, that Bluecore received the seed's ``purchase`` body
once per example, and that the example's W3C trace id came back in its DeliveryResult and went
on to Bluecore in the request's ``traceparent``. A second sidecar, configured so that the event
is not delivered, checks that each example then exits non-zero (curl, which only prints the
result, must print ``SKIPPED_NO_CONSENT``). First of all it checks that the snippets in
README.md's section "Call it from your language" are still cut from these examples.

    python tools/clients_e2e.py               # build, run, check (make clients-e2e)
    python tools/clients_e2e.py --build-only  # compile only (make clients-build)
    python tools/clients_e2e.py --only go,python,connect-node,curl

Run it with the project's virtualenv (it starts the sidecar with the same interpreter).
Closes with ``clients-e2e: N passed, N failed``; exits non-zero unless every client passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bluecore_devtools.localrun import child_process, free_port

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "client_stubs"
CACHE = ROOT / ".cache" / "clients"
NAMESPACE = "bluestore"

# The Bluecore body the seed says "Order Completed" becomes (bluecore-integration.txt), with the
# seed's namespace "bluestore", which is also the NAMESPACE the sidecar runs with here.
SEED_BODY: dict[str, Any] = json.loads(
    (ROOT / "examples" / "bluecore" / "order_completed.body.json").read_text(encoding="utf-8")
)

BUILD_TIMEOUT = 900.0
RUN_TIMEOUT = 180.0
START_TIMEOUT = 30.0
# Batch mode, quiet, and no colour codes in the output that is searched below.
MVN = ["mvn", "-B", "-q", "-Dstyle.color=never"]
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The DeliveryResult's trace id as each example prints it (JSON or protobuf text format).
RESULT_TRACE_ID = re.compile(r'(?:traceId|trace_id)"?\s*:\s*"([0-9a-f]{32})"')
TRACEPARENT = re.compile(r"^traceparent: 00-([0-9a-f]{32})-[0-9a-f]{16}-01$", re.MULTILINE)


@dataclass
class Client:
    """One language's example: how to build it and how to run it."""

    name: str
    cwd: Path
    build: list[list[str]]
    run: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # False for a program that prints the result and exits 0 whatever it says (curl).
    exit_says_delivered: bool = True
    # More programs (argv, extra environment) that must exit 0 against the delivering sidecar.
    checks: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)


def clients() -> list[Client]:
    py_venv = CACHE / "python-venv"
    py = py_venv / "bin" / "python"
    go_binary = CACHE / "go-deliver"
    return [
        Client(
            name="go",
            cwd=STUBS / "go",
            build=[
                ["go", "vet", "./..."],
                ["go", "build", "-buildvcs=false", "-o", str(go_binary), "./examples/deliver"],
            ],
            run=[str(go_binary)],
        ),
        Client(
            name="java",
            cwd=STUBS / "java" / "examples",
            build=[
                # The client jar into the local Maven repository, as a user would depend on it.
                [*MVN, "-f", str(STUBS / "java" / "pom.xml"), "install"],
                [*MVN, "compile"],
            ],
            run=[*MVN, "exec:java"],
        ),
        Client(
            name="node",
            cwd=STUBS / "node",
            build=[
                # npm ci runs the package's `prepare` script: tsc builds dist/ with .d.ts.
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                ["npm", "run", "--silent", "build:examples"],
            ],
            run=["node", "dist-examples/deliver.js"],
        ),
        Client(
            name="python",
            cwd=STUBS / "python",
            build=[
                [sys.executable, "-m", "venv", str(py_venv)],
                [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "."],
                # Pick up regenerated stubs even when the version number did not change.
                [
                    str(py),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--force-reinstall",
                    "--no-deps",
                    ".",
                ],
            ],
            run=[str(py), "examples/deliver.py"],
        ),
        Client(
            name="connect-node",
            cwd=STUBS / "connect-node",
            build=[
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                ["npm", "run", "--silent", "build"],
            ],
            run=["node", "dist/examples/deliver.js"],
            env={"EVENT_FILE": str(ROOT / "examples" / "events" / "order_completed.json")},
            # A refusal reaches the client as the sidecar means it, in JSON and in protobuf.
            checks=[
                (["node", "dist/examples/refused.js"], {}),
                (["node", "dist/examples/refused.js"], {"CONNECT_BINARY": "1"}),
            ],
        ),
        Client(
            name="curl",
            cwd=ROOT,
            build=[["curl", "--version"]],
            # The README's own snippet, so the docs show what CI runs.
            run=["bash", "-euo", "pipefail", "-c", curl_snippet()],
            exit_says_delivered=False,
        ),
    ]


def curl_snippet() -> str:
    """The ``sh`` block of README.md's "Call it from your language" that runs curl."""
    blocks = [body for lang, body in FENCE.findall(client_section(DOCS)) if lang == "sh"]
    found = [body for body in blocks if body.lstrip().startswith("traceparent=") or "curl" in body]
    return found[0] if found else "echo 'README.md has no curl snippet' >&2; exit 1"


DOCS = ROOT / "README.md"
# The examples a README snippet of each language may be cut from; each must be shown.
EXAMPLES = {
    "go": (STUBS / "go" / "examples" / "deliver" / "main.go",),
    "java": (
        STUBS
        / "java"
        / "examples"
        / "src/main/java/com/datafly/bluecore/examples/DeliverOrder.java",
    ),
    "ts": (
        STUBS / "node" / "examples" / "deliver.ts",
        STUBS / "connect-node" / "examples" / "deliver.ts",
    ),
    "python": (STUBS / "python" / "examples" / "deliver.py",),
}
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def client_section(path: Path) -> str:
    """The "Call it from your language" section of a Markdown file ('' when it has none)."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    match = re.search(r"^(#+) Call it from your language\s*$", text, re.MULTILINE)
    if match is None:
        return ""
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def check_docs() -> list[str]:
    """Problems with the client snippets: each must be cut from an example, in order.

    Every non-blank line of a ``go``/``java``/``ts``/``python`` block in README.md's section
    must appear, stripped of indentation, among one example's lines and after the previous
    one, so the docs show code that CI compiles and runs. Every example must be shown.
    """
    problems: list[str] = []
    shown: set[Path] = set()
    for lang, body in FENCE.findall(client_section(DOCS)):
        if lang not in EXAMPLES:
            continue
        wanted = [line.strip() for line in body.splitlines() if line.strip()]
        misses = []
        for example in EXAMPLES[lang]:
            missing = _first_missing(wanted, example)
            if missing is None:
                shown.add(example)
                break
            misses.append(f"{example.relative_to(ROOT)}: {missing}")
        else:
            problems.append(
                f"README.md: a {lang} snippet is not cut (in order) from an example; "
                f"first line not found in {'; in '.join(misses)}"
            )
    problems.extend(
        f"no README.md snippet from {example.relative_to(ROOT)}"
        for examples in EXAMPLES.values()
        for example in examples
        if example not in shown
    )
    return problems


def _first_missing(wanted: list[str], example: Path) -> str | None:
    """The first of ``wanted`` not found in order among ``example``'s lines; None if all are."""
    lines = [line.strip() for line in example.read_text(encoding="utf-8").splitlines()]
    position = 0
    for line in wanted:
        try:
            position = lines.index(line, position) + 1
        except ValueError:
            return line
    return None


def log(message: str) -> None:
    print(f"clients-e2e: {message}", flush=True)


def run_step(
    cmd: list[str], cwd: Path, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one command, returning the CompletedProcess (output captured, text)."""
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        timeout=timeout,
        capture_output=True,
        text=True,
        check=False,
    )


def build(client: Client) -> str | None:
    """Build ``client``; return None on success or a description of the failure."""
    for cmd in client.build:
        log(f"[{client.name}] $ {' '.join(cmd)}")
        try:
            done = run_step(cmd, client.cwd, BUILD_TIMEOUT)
        except FileNotFoundError:
            return f"{cmd[0]} is not installed"
        except subprocess.TimeoutExpired:
            return f"'{' '.join(cmd)}' took longer than {BUILD_TIMEOUT:.0f}s"
        if done.returncode != 0:
            return f"'{' '.join(cmd)}' exited {done.returncode}\n{done.stdout}{done.stderr}"
    return None


def http_json(method: str, url: str) -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode} at start:\n{tail(log_path)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {START_TIMEOUT:.0f}s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def process(
    cmd: list[str], env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in the background from the repository root, output to ``log_path``."""
    with child_process(cmd, env=env, log=log_path, cwd=ROOT) as proc:
        yield proc


def service_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment minus sidecar/OTel settings a developer may have set, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BLUECORE_", "SIDECAR_", "OTEL_"))
    }
    env.update(extra)
    return env


def check_delivery(
    stdout: str, purchases: Callable[[], list[dict[str, Any]]], before: int
) -> str | None:
    """Check what the sandbox received for one example run; None when all is as expected."""
    match = TRACEPARENT.search(stdout)
    if match is None:
        return "the example printed no 'traceparent: 00-...-01' line"
    trace_id = match.group(1)
    new = purchases()[before:]
    if len(new) != 1:
        return f"the sandbox received {len(new)} purchase requests for this run, expected 1"
    record = new[0]
    if record.get("status") != 202:
        return f"the sandbox answered {record.get('status')}, expected 202"
    if record.get("body") != SEED_BODY:
        return (
            "the purchase body differs from the seed's:\n"
            f"  got:      {json.dumps(record.get('body'), sort_keys=True)}\n"
            f"  expected: {json.dumps(SEED_BODY, sort_keys=True)}"
        )
    result_trace = RESULT_TRACE_ID.search(stdout)
    if result_trace is None or result_trace.group(1) != trace_id:
        found = result_trace.group(1) if result_trace else "none"
        return f"the DeliveryResult's trace id is {found}, not the example's {trace_id}"
    headers = {k.lower(): v for k, v in (record.get("headers") or {}).items()}
    upstream_trace = str(headers.get("traceparent", ""))
    if f"-{trace_id}-" not in f"{upstream_trace}-":
        return (
            f"the request to Bluecore carried traceparent {upstream_trace!r}, "
            f"not the example's trace id {trace_id}"
        )
    return None


def run_example(
    client: Client,
    target: Target,
    argv: list[str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> tuple[int | None, str, str]:
    """Run one example (``argv``, default its ``run``) against ``target``.

    Returns (exit code or None on timeout, stdout, all output).
    """
    argv = argv or client.run
    shown = " ".join(argv) if client.name != "curl" else "bash -c <README's curl snippet>"
    shown = " ".join([*(f"{k}={v}" for k, v in (extra or {}).items()), shown])
    log(
        f"[{client.name}] $ {shown}  "
        f"(SIDECAR_ADDRESS={target.grpc}, SIDECAR_HTTP_URL={target.http})"
    )
    env = {
        **os.environ,
        **client.env,
        **(extra or {}),
        "SIDECAR_ADDRESS": target.grpc,
        "SIDECAR_HTTP_URL": target.http,
    }
    try:
        done = run_step(argv, client.cwd, RUN_TIMEOUT, env)
    except subprocess.TimeoutExpired:
        return None, "", f"did not finish within {RUN_TIMEOUT:.0f}s"
    output = ANSI_ESCAPE.sub("", done.stdout + done.stderr)
    print("\n".join(f"    {line}" for line in output.splitlines()), flush=True)
    return done.returncode, ANSI_ESCAPE.sub("", done.stdout), output


class _OtlpSink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them: tracing on, no collector needed."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Target:
    """Where a running sidecar listens: gRPC ``host:port`` and the HTTP door's base URL."""

    grpc: str
    http: str


class Stack:
    """The sandbox plus sidecars started against it, on free loopback ports."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self.logs = CACHE / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sandbox_url = f"http://127.0.0.1:{free_port()}"
        port = self.sandbox_url.rsplit(":", 1)[1]
        log(f"starting the sandbox on {self.sandbox_url}")
        cmd = [sys.executable, "-m", "bluecore_sidecar", "sandbox", "--host", "127.0.0.1"]
        path = self.logs / "sandbox.log"
        proc = stack.enter_context(process([*cmd, "--port", port], service_env({}), path))
        wait_ready(f"{self.sandbox_url}/_sandbox/health", proc, "the sandbox", path)
        # Sidecars trace (so DeliveryResult.trace_id and the upstream traceparent are defined)
        # and export their spans here.
        sink = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        stack.callback(sink.server_close)
        stack.callback(sink.shutdown)
        self.otlp_endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"

    def purchases(self) -> list[dict[str, Any]]:
        return list(http_json("GET", f"{self.sandbox_url}/_sandbox/received?event=purchase"))

    @contextlib.contextmanager
    def sidecar(self, name: str, settings: Mapping[str, str]) -> Iterator[Target]:
        """Run ``bluecore-sidecar serve`` with ``settings``; yield where it listens."""
        address, ops = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        http = f"127.0.0.1:{free_port()}"
        env = service_env(
            {
                "BLUECORE_NAMESPACE": NAMESPACE,
                "BLUECORE_API_URL": f"{self.sandbox_url}/api/track/mobile/v1",
                "SIDECAR_GRPC_ADDRESS": address,
                "SIDECAR_OPS_ADDRESS": ops,
                "SIDECAR_HTTP_ADDRESS": http,
                "SIDECAR_SHUTDOWN_GRACE": "5s",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.otlp_endpoint,
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "bluecore-sidecar-clients-e2e",
                **settings,
            }
        )
        path = self.logs / f"sidecar-{name}.log"
        log(f"starting the {name} sidecar on {address} (log: {path.relative_to(ROOT)})")
        cmd = [sys.executable, "-m", "bluecore_sidecar", "serve"]
        with process(cmd, env, path) as proc:
            wait_ready(f"http://{ops}/readyz", proc, f"the {name} sidecar", path)
            yield Target(address, f"http://{http}")
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                log(f"warning: the {name} sidecar exited {code} on SIGTERM:\n{tail(path)}")


def run_all(selected: list[Client]) -> dict[str, str | None]:
    """Run every built example against live sidecars; map client name to failure or None.

    First against a sidecar that delivers: each example must exit 0 and the sandbox must get
    the seed's purchase body, carrying the example's trace id. Then against a sidecar whose
    consent category the event does not grant: each example must exit non-zero, since the
    event is not delivered, and the sandbox must get nothing.
    """
    results: dict[str, str | None] = {}
    with contextlib.ExitStack() as exits:
        stack = Stack(exits)
        with stack.sidecar("delivering", {}) as target:
            for client in selected:
                before = len(stack.purchases())
                code, stdout, output = run_example(client, target)
                if code != 0:
                    results[client.name] = f"exited {code} against a delivering sidecar"
                    continue
                results[client.name] = check_delivery(stdout, stack.purchases, before)
                for argv, extra in client.checks:
                    code, _, _ = run_example(client, target, argv, extra)
                    if code != 0 and results[client.name] is None:
                        results[client.name] = f"'{' '.join(argv)}' {extra or ''} exited {code}"
        delivered = [r for r in stack.purchases() if r.get("body") == SEED_BODY]
        log(f"the sandbox received the seed's purchase body {len(delivered)} time(s)")

        before = len(stack.purchases())
        withholding = {"SIDECAR_CONSENT_CATEGORY": "e2e_not_granted"}
        with stack.sidecar("withholding", withholding) as target:
            for client in selected:
                code, _, output = run_example(client, target)
                if results.get(client.name) is not None:
                    continue
                if not client.exit_says_delivered:
                    if code != 0 or "SKIPPED_NO_CONSENT" not in output:
                        results[client.name] = (
                            f"exited {code} without printing the SKIPPED_NO_CONSENT result"
                        )
                elif code in (0, None):
                    results[client.name] = (
                        f"exited {code} although the event was not delivered (no consent)"
                    )
                elif "SKIPPED_NO_CONSENT" not in output:
                    results[client.name] = "did not print the SKIPPED_NO_CONSENT result"
        if len(stack.purchases()) != before:
            for client in selected:
                results[client.name] = results.get(client.name) or (
                    "the withholding sidecar sent a purchase to Bluecore"
                )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-only", action="store_true", help="compile, do not run")
    parser.add_argument(
        "--only", default="", help="comma-separated subset: go,java,node,python,connect-node,curl"
    )
    args = parser.parse_args(argv)

    selected = clients()
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {c.name for c in selected}
        if unknown:
            parser.error(f"unknown client(s): {', '.join(sorted(unknown))}")
        selected = [c for c in selected if c.name in wanted]
    CACHE.mkdir(parents=True, exist_ok=True)

    doc_problems = check_docs()
    for problem in doc_problems:
        log(f"docs: {problem}")
    if not doc_problems:
        log("docs: every client snippet is cut from its example")

    failures: dict[str, str] = {}
    built: list[Client] = []
    for client in selected:  # one at a time: builds are heavy and the machine is small
        problem = build(client)
        if problem is None:
            log(f"[{client.name}] built")
            built.append(client)
        else:
            failures[client.name] = f"build failed: {problem}"

    if not args.build_only and built:
        try:
            outcomes = run_all(built)
        except RuntimeError as err:
            outcomes = {c.name: str(err) for c in built}
        for name, problem in outcomes.items():
            if problem is not None:
                failures[name] = problem

    for client in selected:
        verdict = "FAIL" if client.name in failures else "ok"
        suffix = f": {failures[client.name]}" if client.name in failures else ""
        log(f"{verdict:4} {client.name}{suffix}")
    passed = len(selected) - len(failures)
    log(f"{passed} passed, {len(failures)} failed")
    return 1 if failures or doc_problems else 0


if __name__ == "__main__":
    sys.exit(main())
