"""``make bench``: the sidecar against a bare forwarder, and the cost of tracing, in one run.

The driver starts, as child processes on free loopback ports: an upstream that answers 202
(nginx from Debian, else the sandbox with a warning, or any ``--upstream URL``), the yardstick
forwarder (``bench/forwarder.py``), and three sidecars (``python -m bluecore_sidecar serve``):
tracing off, tracing on at 100% (``always_on``) and parent-based 10%
(``parentbased_traceidratio``, 0.1), the traced ones exporting OTLP/gRPC to a span-counting
sink inside this process. Each phase is one load-generator process (``bench/loadgen.py``)
sending Deliver or DeliverBatch calls to one server; phases are interleaved in rounds and the
report gives medians over rounds. Every child is stopped on exit, error, Ctrl-C or SIGTERM.

Beside those throughput phases (closed loop), the same run can measure (``--phases``):

- ``latency``: an open-loop Deliver phase at half the forwarder's measured maximum rate,
  p50/p99 of the sidecar and the forwarder side by side and their difference;
- ``watchers``: a fifth sidecar holding 500 ``WatchDeliveries`` streams that never read
  (``bench/watchers.py``), against the tracing-off sidecar with none, same rounds;
- ``ghz``: the same Deliver load from ghz, a Go load tool (built pinned by
  ``tools/install-ghz.sh``), against the forwarder and the tracing-off sidecar;

and, on request, a py-spy profile of the sidecar under load (``--profile``) and the hooks
for features still being built (``--compare-workers``, ``--compare-durable``).

See bench/README.md for the method and the latest numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from bluecore_devtools.localrun import free_port

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from otlp_sink import SpanCounter, start_sink  # noqa: E402 - needs the path above

PY = sys.executable
EVENTS_PATH = "/api/track/mobile/v1"
NAMESPACE = "bench-namespace"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The servers under test, in the order of the report.
SERVERS = (
    "forwarder",
    "sidecar",
    "sidecar-trace100",
    "sidecar-trace10",
    "sidecar-base",
    "sidecar-trace10-base",
    "sidecar-watch500",
    "sidecar-workers2",
    "sidecar-durable",
)
#: Started by ``--servers`` (default: the first four); the others by their phase or flag.
BASE_SERVERS = SERVERS[:4]
LABELS = {
    "forwarder": "forwarder (yardstick)",
    "sidecar": "sidecar, tracing off",
    "sidecar-trace100": "sidecar, tracing 100%",
    "sidecar-trace10": "sidecar, parent-based 10%",
    "sidecar-base": "base rev sidecar, tracing off",
    "sidecar-trace10-base": "base rev sidecar, parent-based 10%",
    "sidecar-watch500": "sidecar, 500 idle watchers",
    "sidecar-workers2": "sidecar, SIDECAR_WORKERS=2",
    "sidecar-durable": "sidecar, durable queue",
}
#: Run by ``--compare-rev REV``: the code of another git revision, side by side in the same
#: rounds (tracing off and parent-based 10%), for a before/after on one busy machine.
COMPARE_SERVERS = ("sidecar-base", "sidecar-trace10-base")
#: Calls, as measured: closed-loop Deliver and DeliverBatch (loadgen), open-loop Deliver at a
#: fixed rate (loadgen --rate), and closed-loop Deliver from ghz.
MODES = ("deliver", "batch", "watchers", "latency", "scaling", "ghz")
MODE_NAMES = {
    "deliver": "Deliver",
    "watchers": "Deliver",  # the watchers phase: its own call count, sidecars only
    "latency": "Deliver, open loop",
    "scaling": "Deliver, open loop, same rate per worker",
    "ghz": "Deliver (ghz)",
}
PHASES = ("throughput", "latency", "watchers", "ghz")

#: HOOKS: each runs one more sidecar, tracing off, with one setting, compared with the plain
#: tracing-off sidecar in the same rounds. The sidecar ignores unknown SIDECAR_* variables, so
#: a hook run against code without its feature (``--compare-rev`` of an old revision, say)
#: would print a number for the plain sidecar under a misleading name: the driver refuses
#: unless ``bluecore_sidecar.config.Settings`` has the named field.
HOOKS: dict[str, tuple[str, str, str]] = {
    # server name: (flag, settings field that must exist, environment variable)
    "sidecar-workers2": ("--compare-workers", "workers", "SIDECAR_WORKERS"),
    "sidecar-durable": ("--compare-durable", "queue_path", "SIDECAR_QUEUE_PATH"),
}
#: Hooks whose feature exists: they run by default (``--no-compare-durable`` leaves one out).
BUILT = frozenset({"sidecar-durable"})
#: Outcomes that count as "accepted" for a server: a durable sidecar answers QUEUED once the
#: event is on disk. QUEUED is not delivered yet, so for the servers in DRAINS a phase starts
#: only once the queue is empty (the warm-up's events gone) and its clock and CPU count stop
#: only when the queue is empty again: the ``bluecore_sidecar_queue_depth`` gauge on /metrics,
#: read from the store at each scrape, polled every DRAIN_POLL seconds.
ACCEPTED = {"sidecar-durable": ("DELIVERED", "QUEUED")}
DRAINS = frozenset({"sidecar-durable"})
DRAIN_POLL = 0.1
#: The reference each server is compared with in the summary.
#: The workers phase: the same open-loop Deliver rate per worker process, one worker against two.
SCALING_SERVERS = ("sidecar", "sidecar-workers2")
REFERENCE = {
    "sidecar-watch500": "sidecar",
    "sidecar-workers2": "sidecar",
    "sidecar-durable": "sidecar",
}
SEED_EVENT = "order_completed.json"


class BenchError(Exception):
    """The benchmark cannot go on; printed as one line, exit 1."""


@dataclasses.dataclass
class Child:
    """A child process the driver owns, with the file its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds of the process and its live descendants so far.

        Descendants count so that a sidecar running worker processes (the SIDECAR_WORKERS
        hook) is charged for all of them; the other servers have none.
        """
        return tree_cpu_seconds(self.proc.pid)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass
class Server:
    """A gRPC server under test."""

    name: str
    address: str
    child: Child
    ops_url: str = ""  # sidecars: the ops HTTP port, for /metrics
    watchers: asyncio.subprocess.Process | None = None  # sidecar-watch500's stream holder
    watchers_open: int = 0


# ----------------------------------------------------------------------------- measurement


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def live_children() -> dict[int, list[int]]:
    """Every live process's children, by parent pid (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    return parents


def tree_cpu_seconds(pid: int, parents: dict[int, list[int]] | None = None) -> float:
    """CPU seconds of ``pid`` plus every live process below it (``parents``: from
    :func:`live_children`, read afresh when not given)."""
    if parents is None:
        parents = live_children()
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(current)
        todo.extend(parents.get(current, ()))
    return total


def children_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each live child of ``pid`` (with its own descendants), by child pid."""
    parents = live_children()
    shares = {}
    for child in parents.get(pid, ()):
        with contextlib.suppress(OSError):
            shares[child] = tree_cpu_seconds(child, parents)
    return shares


def reaped_children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def host_cpu() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of the whole machine from /proc/stat.

    Steal is time the hypervisor gave this VM's virtual CPUs to someone else; it is not in
    "busy", which counts this machine's own processes.
    """
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])
    return total - idle - steal, total, steal


def machine_facts() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "grpcio": _version("grpcio"),
        "aiohttp": _version("aiohttp"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "protobuf": _version("protobuf"),
    }


def git_state() -> dict[str, Any]:
    """The commit measured and whether the server code had uncommitted changes."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "server")
    return {"commit": git("rev-parse", "HEAD"), "server_uncommitted": changed.splitlines()}


def _version(dist: str) -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------- processes


#: With --pin: the CPU of every server, and the CPU of nginx, the load generators and the
#: driver. A server and its load never share a core, and the two servers compared in a
#: round get the same core under the same neighbours.
SERVER_CPU = 1
LOAD_CPU = 0
#: Where bench/tailprobe.py writes what it saw (in the run's work directory).
TAIL_PROBE_FILE = "tailprobe-sidecar.json"


def pinned(args: argparse.Namespace, cpu: int, cmd: list[str]) -> list[str]:
    """``cmd`` under ``taskset -c cpu`` with --pin, else as it is."""
    if not getattr(args, "pin", False):
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``cmd`` in its own session (Ctrl-C reaches only the driver, which stops it)."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    return Child(name, proc, log)


async def stop_child(child: Child, sig: int = signal.SIGTERM, grace: float = 25.0) -> None:
    """Signal ``child``, wait for it without blocking the loop, kill it after ``grace``."""
    if child.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.proc.send_signal(sig)
    try:
        # In a thread: the loop must keep serving the span sink while a sidecar flushes.
        await asyncio.to_thread(child.proc.wait, grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()
        await asyncio.to_thread(child.proc.wait, 5)


async def wait_tcp(child: Child, port: int, timeout: float = 20.0) -> None:
    """Wait until ``port`` accepts connections, or fail if ``child`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited at start-up:\n{child.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise BenchError(f"{child.name} did not listen on port {port} within {timeout:.0f}s")


async def wait_grpc(server: Server, timeout: float = 30.0) -> None:
    """Wait until the server's gRPC port is ready."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.child.proc.poll() is not None:
                raise BenchError(f"{server.name} exited at start-up:\n{server.child.log_tail()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.channel_ready(), 0.5)
                return
    raise BenchError(f"{server.name} did not serve gRPC on {server.address} within {timeout:.0f}s")


async def check_upstream(url: str) -> None:
    """One POST of a valid Bluecore body: the upstream must answer 2xx before we measure."""
    body = {"event": "viewed_page", "properties": {"token": NAMESPACE, "distinct_id": "bench"}}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.post(url, json=body) as answer:
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BenchError(f"upstream {url} is unreachable: {exc}") from None
    if not 200 <= status < 300:
        raise BenchError(f"upstream {url} answered {status} to a valid event; expected 2xx")


@dataclasses.dataclass
class Upstream:
    """Where deliveries go, and the process serving it when the bench started it."""

    url: str
    kind: str  # nginx | sandbox | external
    child: Child | None = None


async def start_upstream(args: argparse.Namespace, workdir: Path) -> Upstream:
    """nginx from Debian if installed; else the sandbox with a warning; or ``--upstream``."""
    if args.upstream:
        await check_upstream(args.upstream)
        return Upstream(args.upstream, "external")
    port = free_port()
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if nginx and not args.sandbox:
        config = workdir / "nginx.conf"
        text = (BENCH / "nginx.conf").read_text()
        config.write_text(text.replace("@PORT@", str(port)).replace("@DIR@", str(workdir)))
        cmd = [nginx, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(config)]
        child = spawn("nginx", pinned(args, LOAD_CPU, cmd), workdir)
        kind = "nginx"
    else:
        if not args.sandbox:
            print(
                "WARNING: nginx is not installed, so the upstream is the sandbox (a Python "
                "fake meant for correctness): it shares the 2 cores and the numbers below "
                "measure it too. `apt-get install nginx-light` (make bench does it as root) "
                "or --upstream URL for real numbers.",
                flush=True,
            )
        cmd = [PY, "-m", "bluecore_sidecar", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
        child = spawn("sandbox", cmd, workdir)
        kind = "sandbox"
    await wait_tcp(child, port)
    upstream = Upstream(f"http://127.0.0.1:{port}{EVENTS_PATH}", kind, child)
    await check_upstream(upstream.url)
    return upstream


def server_env(
    name: str,
    address: str,
    upstream: str,
    sink_port: int,
    extra: list[str],
    workdir: Path,
    durable_mode: str = "wait",
    site: Path | None = None,
) -> dict[str, str]:
    """The environment of one sidecar: ours only, nothing inherited from SIDECAR_/OTEL_.

    ``site``: the compiled build of this work tree, first on the path (``None``: the source).
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "BLUECORE_", "OTEL_"))
    }
    env.update(
        {
            "BLUECORE_NAMESPACE": NAMESPACE,
            "BLUECORE_API_URL": upstream,
            "SIDECAR_GRPC_ADDRESS": address,
            "SIDECAR_OPS_ADDRESS": f"127.0.0.1:{free_port()}",
            "SIDECAR_HTTP_ADDRESS": "",  # the JSON door is not measured here
            "OTEL_SERVICE_NAME": f"bench-{name}",
        }
    )
    if name.startswith("sidecar-trace"):
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            }
        )
        if name == "sidecar-trace100":
            env["OTEL_TRACES_SAMPLER"] = "always_on"
        else:
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = "0.1"
    if name == "sidecar-workers2":
        env["SIDECAR_WORKERS"] = "2"  # HOOK (workers): the variable's name and value
    if name == "sidecar-durable":
        env["SIDECAR_QUEUE_PATH"] = str(workdir / "queue.db")
        env["SIDECAR_DELIVERY_MODE"] = durable_mode
    if name in COMPARE_SERVERS:
        # The extracted revision's package comes first on the path (before the editable
        # install of this work tree).
        env["PYTHONPATH"] = str(workdir / "base" / "server")
    elif site is not None:
        # This work tree as the image ships it: the hot modules compiled (tools/compile.py).
        env["PYTHONPATH"] = str(site)
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise BenchError(f"--sidecar-env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


async def start_servers(
    args: argparse.Namespace,
    workdir: Path,
    upstream: Upstream,
    sink_port: int,
    children: list[Child],
) -> dict[str, Server]:
    """Start the forwarder and the sidecars (added to ``children``), wait until they serve."""
    servers: dict[str, Server] = {}
    for name in args.all_servers:
        address = f"127.0.0.1:{free_port()}"
        ops_url = ""
        if name == "forwarder":
            cmd = [PY, str(BENCH / "forwarder.py"), "--listen", address, "--upstream", upstream.url]
            child = spawn(name, pinned(args, SERVER_CPU, cmd), workdir)
        else:
            env = server_env(
                name,
                address,
                upstream.url,
                sink_port,
                args.sidecar_env,
                workdir,
                args.durable_mode,
                args.site,
            )
            if name == "sidecar-watch500":
                # The proof is at --watchers streams, above the default cap (100); a cap set
                # with --sidecar-env wins, and the refused streams then show in the report.
                env.setdefault("SIDECAR_MAX_WATCHERS", str(max(1, args.watchers)))
            ops_url = f"http://{env['SIDECAR_OPS_ADDRESS']}/metrics"
            cmd = [PY, "-m", "bluecore_sidecar", "serve"]
            if name == "sidecar" and args.tail_probe:
                cmd = [PY, str(BENCH / "tailprobe.py"), str(workdir / TAIL_PROBE_FILE), "serve"]
            child = spawn(name, pinned(args, SERVER_CPU, cmd), workdir, env)
        children.append(child)
        servers[name] = Server(name, address, child, ops_url)
    await asyncio.gather(*(wait_grpc(server) for server in servers.values()))
    if "sidecar-watch500" in servers:
        await open_watchers(servers["sidecar-watch500"], args.watchers, workdir)
    return servers


async def open_watchers(server: Server, count: int, workdir: Path) -> None:
    """Start bench/watchers.py against ``server`` and wait until its streams are open."""
    log = (workdir / "watchers.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        PY,
        str(BENCH / "watchers.py"),
        f"--target={server.address}",
        f"--count={count}",
        f"--prefix=watchers-{time.time_ns()}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
        start_new_session=True,
    )
    log.close()
    server.watchers = proc
    try:
        async with asyncio.timeout(60):
            ready = await read_message(proc)
    except TimeoutError:
        raise BenchError(f"{count} watchers did not open within 60 s") from None
    server.watchers_open = ready["open"]
    refused = ready.get("refused") or {}
    print(
        f"bench: {server.name}: {server.watchers_open} of {count} WatchDeliveries streams open"
        " and never read" + (f"; refused: {refused}" if refused else ""),
        flush=True,
    )


async def reopen_watchers(server: Server, count: int, workdir: Path) -> None:
    """Fresh streams for ``server``'s next phase, unless those of the start are still unused."""
    proc = server.watchers
    if proc is not None and proc.returncode is None:
        return
    await open_watchers(server, count, workdir)


async def close_watchers(server: Server) -> None:
    """Tell the watchers' process to cancel its streams, and wait for it."""
    proc = server.watchers
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# ----------------------------------------------------------------------------- phases


@dataclasses.dataclass
class Snapshot:
    """Counters read just before and just after a measured phase."""

    server_cpu: float
    upstream_cpu: float
    driver_cpu: float
    host_busy: int
    host_total: int
    host_steal: int
    #: The 2-worker sidecar: CPU seconds of each worker process (the supervisor's children).
    workers_cpu: dict[int, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def take(cls, server: Server, upstream: Upstream) -> Snapshot:
        busy, total, steal = host_cpu()
        return cls(
            workers_cpu=(
                children_cpu_seconds(server.child.proc.pid)
                if server.name == "sidecar-workers2"
                else {}
            ),
            server_cpu=server.child.cpu_seconds(),
            upstream_cpu=upstream.child.cpu_seconds() if upstream.child else 0.0,
            driver_cpu=proc_cpu_seconds(os.getpid()),
            host_busy=busy,
            host_total=total,
            host_steal=steal,
        )


async def read_message(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """The next JSON line from the load generator."""
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if not line:
        raise BenchError("the load generator exited early (see its log in the work directory)")
    message: dict[str, Any] = json.loads(line)
    return message


async def run_phase(
    args: argparse.Namespace,
    server: Server,
    mode: str,
    round_no: int,
    upstream: Upstream,
    workdir: Path,
    *,
    rate: float = 0.0,
    calls: int = 0,
    profile: list[str] | None = None,
    max_seconds: float = 0.0,
    channels: int = 0,
) -> dict[str, Any]:
    """One load-generator run against one server; the raw numbers of the phase.

    ``mode`` ``latency`` is open loop at ``rate`` calls/s. With ``profile`` (a py-spy command
    line), py-spy starts together with the measured calls and the phase waits for it too.
    """
    deliver = mode in ("deliver", "watchers", "latency", "scaling")
    if not calls:
        calls = {"watchers": args.watchers_calls, "latency": args.latency_calls}.get(
            mode, args.deliver_calls if deliver else args.batches
        )
    cmd = [
        PY,
        str(BENCH / "loadgen.py"),
        f"--target={server.address}",
        f"--mode={'deliver' if deliver else 'batch'}",
        f"--calls={calls}",
        f"--rate={rate}",
        f"--max-seconds={max_seconds}",
        f"--warmup={args.warmup_calls if deliver else args.warmup_batches}",
        f"--batch-size={args.batch_size}",
        f"--concurrency={args.concurrency if deliver else args.batch_concurrency}",
        f"--channels={channels or args.channels}",
        f"--prefix={server.name}-r{round_no}-{mode}-{time.time_ns()}",
        f"--events={args.events}",
        f"--customers={args.customers}",
    ]
    log = (workdir / f"loadgen-{server.name}-{mode}-r{round_no}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *pinned(args, LOAD_CPU, cmd),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
        start_new_session=True,
    )
    label = f"  round {round_no} {LABELS[server.name]:<26} {mode:<8}"
    spy: asyncio.subprocess.Process | None = None
    try:
        async with asyncio.timeout(args.phase_timeout):
            ready = await read_message(proc)
            if "ready" not in ready:
                raise BenchError(f"unexpected message from the load generator: {ready}")
            if server.name in DRAINS:
                await wait_drained(server, args.phase_timeout)  # the warm-up's events
            before = Snapshot.take(server, upstream)
            began = time.monotonic()
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            if profile:
                spy_log = (workdir / "py-spy.log").open("wb")
                spy = await asyncio.create_subprocess_exec(
                    *profile, stdout=spy_log, stderr=asyncio.subprocess.STDOUT, cwd=ROOT
                )
                spy_log.close()
            shown = began
            while "result" not in (message := await read_message(proc)):
                now = time.monotonic()
                if "progress" in message and now - shown >= 5:
                    print(f"{label} ... {message['progress']}/{calls} calls", flush=True)
                    shown = now
            drain_s = 0.0
            if server.name in DRAINS:
                drain_s = await wait_drained(server, args.phase_timeout)
            after = Snapshot.take(server, upstream)
            ended = time.monotonic()
            await proc.wait()
            if spy is not None and await spy.wait() != 0:
                print(f"WARNING: py-spy exited {spy.returncode}; see its output:", flush=True)
                print((workdir / "py-spy.log").read_text(errors="replace")[-2000:], flush=True)
    except TimeoutError:
        raise BenchError(
            f"phase {server.name}/{mode} took longer than --phase-timeout {args.phase_timeout}s"
        ) from None
    finally:
        for child in (proc, spy):
            if child is not None and child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        log.close()
    if server.child.proc.poll() is not None:
        raise BenchError(f"{server.name} died during the phase:\n{server.child.log_tail()}")
    result: dict[str, Any] = message["result"]
    # The load generator's clock stopped at its last answer; what it left queued counts too.
    result["wall_s"] += drain_s
    result["drain_s"] = drain_s
    events = result["events"]
    accepted = ACCEPTED.get(server.name, ("DELIVERED",))
    delivered = sum(result["outcomes"].get(status, 0) for status in accepted)
    wall = result["wall_s"]
    server_cpu = after.server_cpu - before.server_cpu
    upstream_cpu = after.upstream_cpu - before.upstream_cpu
    # Whatever the machine was busy with beyond this benchmark's own processes: other work
    # on a shared machine, in cores. Jiffies are summed over all CPUs.
    host_busy_s = (after.host_busy - before.host_busy) / CLOCK_TICKS
    ours = (
        server_cpu + upstream_cpu + result["loadgen_cpu_s"] + after.driver_cpu - before.driver_cpu
    )
    phase = {
        "round": round_no,
        "server": server.name,
        **result,
        # The driver's monotonic clock (system-wide): tailprobe.py's samples are on it too.
        "t_began": began,
        "t_ended": ended,
        "mode": mode,  # ours, not the load generator's (it says "deliver" for three of them)
        "delivered": delivered,
        "not_delivered": events - delivered,
        "warmup_outcomes": ready.get("warmup_outcomes", {}),
        "deliveries_per_s": delivered / wall,
        "server_cpu_s": server_cpu,
        "server_cpu_s_per_1k": server_cpu / events * 1000,
        "server_cores": server_cpu / wall,
        "upstream_cpu_s_per_1k": upstream_cpu / events * 1000,
        "loadgen_cpu_s_per_1k": result["loadgen_cpu_s"] / events * 1000,
        "host_busy_cores": host_busy_s / wall,
        "other_load_cores": max(host_busy_s - ours, 0.0) / wall,
        "steal_cores": (after.host_steal - before.host_steal) / CLOCK_TICKS / wall,
    }
    if after.workers_cpu:
        # How evenly the kernel spread the load generator's connections over the workers.
        spent = [
            after.workers_cpu[pid] - before.workers_cpu.get(pid, 0.0) for pid in after.workers_cpu
        ]
        phase["worker_cpu_shares"] = sorted(
            (share / max(sum(spent), 1e-9) for share in spent), reverse=True
        )
        phase["busiest_worker_share"] = phase["worker_cpu_shares"][0]
    phase.update(watchers=server.watchers_open)
    print(
        f"{label} {phase['deliveries_per_s']:8.0f} deliveries/s  p50 {result['p50_ms']:6.1f} ms"
        f"  p99 {result['p99_ms']:6.1f} ms  CPU {phase['server_cpu_s_per_1k']:.3f} s/1k"
        + (f"  NOT DELIVERED {phase['not_delivered']}" if phase["not_delivered"] else ""),
        flush=True,
    )
    return phase


def ghz_data(events_dir: Path, prefix: str) -> str:
    """The seed's Order Completed event as a DeliverRequest in JSON, a new id per call.

    ghz evaluates the data as a Go template for every request; ``.RequestNumber`` is unique
    within one ghz run and ``prefix`` is unique per run, so dedup never answers a call.
    """
    event = json.loads((events_dir / SEED_EVENT).read_text())
    event["messageId"] = f"{prefix}-{{{{.RequestNumber}}}}"
    return json.dumps({"event": event})


def ghz_command(
    ghz: str, server: Server, data_file: Path, calls: int, args: argparse.Namespace
) -> list[str]:
    """The ghz command line of one phase (printed in the report as it was run)."""
    return [
        ghz,
        "--insecure",
        f"--proto={ROOT / 'proto' / 'datafly' / 'bluecore' / 'v1' / 'delivery.proto'}",
        f"--import-paths={ROOT / 'proto'}",  # google/protobuf/* are built into ghz
        "--call=datafly.bluecore.v1.DeliveryService.Deliver",
        f"--data-file={data_file}",
        f"--total={calls}",
        f"--concurrency={args.concurrency}",
        "--connections=1",  # like loadgen: one channel
        "--timeout=30s",
        "--cpus=1",  # GOMAXPROCS=1: the load tool must not take the server's core
        "--format=json",
        server.address,
    ]


async def wait_drained(server: Server, timeout: float) -> float:
    """Seconds until the durable sidecar's queue-depth gauge reads 0."""
    began = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            try:
                async with session.get(server.ops_url) as answer:
                    text = await answer.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BenchError(f"cannot read {server.name}'s queue depth: {exc}") from None
            depth = next(
                (
                    float(line.rpartition(" ")[2])
                    for line in text.splitlines()
                    if line.startswith("bluecore_sidecar_queue_depth ")
                ),
                None,
            )
            if depth is None:
                raise BenchError(f"{server.ops_url} has no bluecore_sidecar_queue_depth gauge")
            if depth == 0:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise BenchError(f"{server.name}'s queue still holds {depth:.0f} events")
            await asyncio.sleep(DRAIN_POLL)


async def scrape_outcomes(server: Server) -> dict[str, float]:
    """The sidecar's delivery outcome counters from /metrics, summed per status."""
    if not server.ops_url:
        return {}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(server.ops_url) as answer,
        ):
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(
            f"cannot read {server.name}'s outcome counters at {server.ops_url}: {exc}"
        ) from None
    if "bluecore_sidecar_deliveries_total" not in text:
        raise BenchError(f"{server.ops_url} has no bluecore_sidecar_deliveries_total counter")
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("bluecore_sidecar_deliveries_total{"):
            labels, _, value = line.rpartition(" ")
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            totals[status] = totals.get(status, 0.0) + float(value)
    return totals


async def run_ghz_phase(
    args: argparse.Namespace,
    server: Server,
    round_no: int,
    upstream: Upstream,
    workdir: Path,
    ghz: str,
) -> dict[str, Any]:
    """One ghz run against one server, in the same shape as :func:`run_phase`'s result.

    A first, unmeasured ghz run sends the warm-up calls. ghz checks only the gRPC status, so
    for a sidecar the outcomes come from the difference of its /metrics counters around the
    measured run; the forwarder answers DELIVERED whenever the upstream answers 2xx.
    """
    calls = args.deliver_calls
    prefix = f"ghz-{server.name}-r{round_no}-{time.time_ns()}"
    warm_file = workdir / f"ghz-{server.name}-r{round_no}-warmup.json"
    warm_file.write_text(ghz_data(args.events, f"{prefix}-w"))
    if args.warmup_calls:
        warm = await asyncio.create_subprocess_exec(
            *pinned(args, LOAD_CPU, ghz_command(ghz, server, warm_file, args.warmup_calls, args)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(args.phase_timeout):
                await warm.wait()
        finally:
            if warm.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    warm.kill()
                await warm.wait()
    data_file = workdir / f"ghz-{server.name}-r{round_no}.json"
    data_file.write_text(ghz_data(args.events, f"{prefix}-m"))
    cmd = pinned(args, LOAD_CPU, ghz_command(ghz, server, data_file, calls, args))
    label = f"  round {round_no} {LABELS[server.name]:<26} {'ghz':<8}"
    counts_before = await scrape_outcomes(server)
    children_before = reaped_children_cpu()
    before = Snapshot.take(server, upstream)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(args.phase_timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        raise BenchError(f"ghz against {server.name} took longer than --phase-timeout") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    after = Snapshot.take(server, upstream)
    # ghz is this process's only child reaped during the phase: its CPU is the difference.
    ghz_cpu = reaped_children_cpu() - children_before
    if proc.returncode != 0 or not out.strip():
        raise BenchError(f"ghz failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
    report = json.loads(out)
    wall = report["total"] / 1e9  # ns: from ghz's first call to its last answer
    total = calls
    latency = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    codes = report.get("statusCodeDistribution") or {}
    if server.ops_url:
        counts_after = await scrape_outcomes(server)
        outcomes = {
            k: int(v - counts_before.get(k, 0.0))
            for k, v in counts_after.items()
            if v - counts_before.get(k, 0.0)
        }
    else:
        outcomes = {"DELIVERED": int(codes.get("OK", 0))}
    for code, count in codes.items():
        if code != "OK":
            outcomes[f"RPC_{code}"] = int(count)
    delivered = outcomes.get("DELIVERED", 0)
    server_cpu = after.server_cpu - before.server_cpu
    upstream_cpu = after.upstream_cpu - before.upstream_cpu
    host_busy_s = (after.host_busy - before.host_busy) / CLOCK_TICKS
    ours = server_cpu + upstream_cpu + ghz_cpu + after.driver_cpu - before.driver_cpu
    phase = {
        "round": round_no,
        "server": server.name,
        "mode": "ghz",
        "calls": total,
        "events": total,
        "completed_calls": int(report.get("count", 0)),
        "wall_s": wall,
        "p50_ms": latency.get(50, 0.0),
        "p90_ms": latency.get(90, 0.0),
        "p99_ms": latency.get(99, 0.0),
        "max_ms": report.get("slowest", 0) / 1e6,
        "ghz_rps": report.get("rps", 0.0),
        "outcomes": outcomes,
        "loadgen_cpu_s": ghz_cpu,
        "command": " ".join(cmd),
        "delivered": delivered,
        "not_delivered": total - delivered,
        "warmup_outcomes": {},
        "deliveries_per_s": delivered / wall,
        "server_cpu_s": server_cpu,
        "server_cpu_s_per_1k": server_cpu / total * 1000,
        "server_cores": server_cpu / wall,
        "upstream_cpu_s_per_1k": upstream_cpu / total * 1000,
        "loadgen_cpu_s_per_1k": ghz_cpu / total * 1000,
        "host_busy_cores": host_busy_s / wall,
        "other_load_cores": max(host_busy_s - ours, 0.0) / wall,
        "steal_cores": (after.host_steal - before.host_steal) / CLOCK_TICKS / wall,
        "watchers": server.watchers_open,
    }
    print(
        f"{label} {phase['deliveries_per_s']:8.0f} deliveries/s  p50 {phase['p50_ms']:6.1f} ms"
        f"  p99 {phase['p99_ms']:6.1f} ms  CPU {phase['server_cpu_s_per_1k']:.3f} s/1k"
        + (f"  NOT DELIVERED {phase['not_delivered']}" if phase["not_delivered"] else ""),
        flush=True,
    )
    return phase


async def clear_sandbox(upstream: Upstream) -> None:
    """The sandbox records every request; drop the record between phases to bound memory."""
    if upstream.kind != "sandbox":
        return
    base = upstream.url.removesuffix(EVENTS_PATH)
    async with aiohttp.ClientSession() as session, session.delete(f"{base}/_sandbox/received"):
        pass


# ----------------------------------------------------------------------------- report


def summarise(phases: list[dict[str, Any]], servers: list[str]) -> list[dict[str, Any]]:
    """Medians over rounds per (mode, server), each compared with its reference server.

    The reference is the forwarder, except for the sidecar variants (watchers, workers,
    durable), which are compared with the plain tracing-off sidecar. In the latency phase every
    server is compared with the forwarder: the question there is what a sidecar, however it
    is set up, adds to a call.
    """
    rows = []
    for mode in MODES:
        by_server: dict[str, dict[str, Any]] = {}
        for name in servers:
            runs = [p for p in phases if p["server"] == name and p["mode"] == mode]
            if not runs:
                continue

            def median(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return statistics.median(p.get(key, 0.0) for p in runs)

            row = {
                "mode": mode,
                "server": name,
                "rounds": len(runs),
                "events_per_round": runs[0]["events"],
                "deliveries_per_s": median("deliveries_per_s"),
                "deliveries_per_s_min": min(p["deliveries_per_s"] for p in runs),
                "deliveries_per_s_max": max(p["deliveries_per_s"] for p in runs),
                "p50_ms": median("p50_ms"),
                "p99_ms": median("p99_ms"),
                "server_cpu_s_per_1k": median("server_cpu_s_per_1k"),
                "deliveries_per_cpu_s": 1000 / max(median("server_cpu_s_per_1k"), 1e-9),
                "upstream_cpu_s_per_1k": median("upstream_cpu_s_per_1k"),
                "loadgen_cpu_s_per_1k": median("loadgen_cpu_s_per_1k"),
                "server_cores": median("server_cores"),
                "other_load_cores": median("other_load_cores"),
                "steal_cores": median("steal_cores"),
                "not_delivered": sum(p["not_delivered"] for p in runs),
                "watchers": runs[0].get("watchers", 0),
            }
            if runs[0].get("worker_cpu_shares"):
                row["busiest_worker_share"] = median("busiest_worker_share")
            if mode in ("latency", "scaling"):
                row["offered_rate"] = median("offered_rate")
                row["peak_in_flight"] = max(p.get("peak_in_flight", 0) for p in runs)
                row["late_starts"] = sum(p.get("late_starts", 0) for p in runs)
            by_server[name] = row
            rows.append(row)
        for row in by_server.values():
            reference = "forwarder" if mode == "latency" else REFERENCE.get(row["server"])
            ref = by_server.get(reference or "forwarder")
            if ref is None or ref is row:
                continue
            row["reference"] = ref["server"]
            row["reference_label"] = _label(ref)
            row["throughput_vs_ref"] = row["deliveries_per_s"] / max(ref["deliveries_per_s"], 1e-9)
            row["cpu_vs_ref"] = row["server_cpu_s_per_1k"] / max(ref["server_cpu_s_per_1k"], 1e-9)
            row["p50_vs_ref_ms"] = row["p50_ms"] - ref["p50_ms"]
            row["p99_vs_ref_ms"] = row["p99_ms"] - ref["p99_ms"]
            # The same comparisons made round by round (the targets table's rule): each
            # server only against what ran beside it in the same round.
            for what, key in (("cpu", "cpu_vs_ref_paired"), ("p99", "p99_vs_ref_paired_ms")):
                found = paired(phases, mode, row["server"], ref["server"], what)
                if found is not None:
                    row[key] = found["median"]
    return rows


#: A round is set aside from the paired target figures when the hypervisor took more than
#: this many cores (steal) during either of its two phases. Declared before the runs it was
#: first applied to (2026-12-02), from the size of the effect, not fitted to any result:
#: a tenth of a core taken from a server that needs about one moves its CPU seconds per event
#: (the stalled time is still billed to it) by more than the 5 % some targets allow.
STEAL_LIMIT_CORES = 0.10
#: Fewer clean rounds than this: the figure uses every round and says so.
MIN_CLEAN_ROUNDS = 3

#: The targets of issues 11 and 12, each judged on per-round pairs: (title, mode, server,
#: reference, what is compared, "<=" or ">=", bound). "cpu": server CPU seconds per event,
#: divided; "throughput": deliveries per second, divided; "p99": p99 ms, subtracted.
TARGETS: tuple[tuple[str, str, str, str, str, str, float], ...] = (
    (
        "Deliver CPU per event vs the forwarder",
        "deliver",
        "sidecar",
        "forwarder",
        "cpu",
        "<=",
        1.15,
    ),
    (
        "DeliverBatch CPU per event vs the forwarder",
        "batch",
        "sidecar",
        "forwarder",
        "cpu",
        "<=",
        1.5,
    ),
    (
        "parent-based 10 % tracing vs off, Deliver",
        "deliver",
        "sidecar-trace10",
        "sidecar",
        "cpu",
        "<=",
        1.05,
    ),
    (
        "parent-based 10 % tracing vs off, batch",
        "batch",
        "sidecar-trace10",
        "sidecar",
        "cpu",
        "<=",
        1.05,
    ),
    ("100 % tracing vs off, Deliver", "deliver", "sidecar-trace100", "sidecar", "cpu", "<=", 1.3),
    ("100 % tracing vs off, batch", "batch", "sidecar-trace100", "sidecar", "cpu", "<=", 1.3),
    ("added p99 at half load (ms)", "latency", "sidecar", "forwarder", "p99", "<=", 2.0),
    (
        "2 workers, CPU per event at the same rate per worker",
        "scaling",
        "sidecar-workers2",
        "sidecar",
        "cpu",
        "<=",
        1.10,
    ),
    (
        "durable Deliver throughput vs direct",
        "deliver",
        "sidecar-durable",
        "sidecar",
        "throughput",
        ">=",
        0.8,
    ),
    (
        "durable batch throughput vs direct",
        "batch",
        "sidecar-durable",
        "sidecar",
        "throughput",
        ">=",
        0.8,
    ),
)
#: What each comparison reads from a phase; a p99 is subtracted, the others divided.
_COMPARED = {"cpu": "server_cpu_s_per_1k", "throughput": "deliveries_per_s", "p99": "p99_ms"}


def _versus(what: str, mine: float, ref: float) -> float:
    return mine - ref if what == "p99" else mine / max(ref, 1e-9)


def _figure(what: str, value: float) -> str:
    return f"{value:+.2f}" if what == "p99" else f"{value:.2f}x"


Phase = dict[str, Any]


def round_pairs(
    phases: list[Phase], mode: str, server: str, reference: str
) -> list[tuple[int, Phase, Phase]]:
    """(round, ``server``'s phase, ``reference``'s phase) for every round in which both ran
    ``mode``, in round order."""
    mine = {p["round"]: p for p in phases if p["server"] == server and p["mode"] == mode}
    theirs = {p["round"]: p for p in phases if p["server"] == reference and p["mode"] == mode}
    return [(r, mine[r], theirs[r]) for r in sorted(mine.keys() & theirs.keys())]


def stolen(a: Phase, b: Phase) -> bool:
    """Whether either phase of a pair had more steal than the declared STEAL_LIMIT_CORES."""
    return max(a.get("steal_cores", 0.0), b.get("steal_cores", 0.0)) > STEAL_LIMIT_CORES


def paired(
    phases: list[Phase], mode: str, server: str, reference: str, what: str
) -> dict[str, Any] | None:
    """``server`` against ``reference`` round by round (both ran in the same round, one after
    the other): the median and range of the per-round figures, over the rounds whose two
    phases both had at most STEAL_LIMIT_CORES of steal; None when no round has both.

    A ratio of medians can pair one server's quiet round with the other's stalled one; the
    median of per-round figures compares each server only with what ran beside it.
    """
    key = _COMPARED[what]
    rounds = round_pairs(phases, mode, server, reference)
    if not rounds:
        return None
    clean = [pair for pair in rounds if not stolen(pair[1], pair[2])]
    used = clean if len(clean) >= MIN_CLEAN_ROUNDS else rounds
    values = [_versus(what, mine[key], theirs[key]) for _, mine, theirs in used]
    return {
        "median": statistics.median(values),
        "low": min(values),
        "high": max(values),
        "rounds": len(rounds),
        "used": len(used),
        "clean": len(clean),
        "values": values,
    }


def render_targets(phases: list[dict[str, Any]]) -> str:
    """Each target of the issues that this run measured, judged on per-round pairs."""
    lines = [
        "| target | median of per-round figures | range | rounds used | bound | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for title, mode, server, reference, what, op, bound in TARGETS:
        found = paired(phases, mode, server, reference, what)
        if found is None:
            continue
        met = found["median"] <= bound if op == "<=" else found["median"] >= bound
        used = f"{found['used']} of {found['rounds']}"
        if found["clean"] < found["used"]:
            used += f" (only {found['clean']} below the steal limit: all used)"
        lines.append(
            f"| {title} | {_figure(what, found['median'])} "
            f"| {_figure(what, found['low'])} to {_figure(what, found['high'])} "
            f"| {used} | {op} {bound:g} | {'met' if met else 'NOT met'} |"
        )
    if len(lines) == 2:
        return "no target's servers ran in this run"
    lines += [
        "",
        f"Rounds in which either phase of the pair had more than {STEAL_LIMIT_CORES:g} cores "
        f"of steal are set aside (unless fewer than {MIN_CLEAN_ROUNDS} rounds would be left); "
        "the rule is fixed in bench/run.py (STEAL_LIMIT_CORES), not chosen per run.",
    ]
    return "\n".join(lines)


def _call(mode: str, batch_size: int) -> str:
    return MODE_NAMES.get(mode, f"DeliverBatch x{batch_size}")


def _label(row: dict[str, Any]) -> str:
    if row["server"] == "sidecar" and row["mode"] == "watchers":
        return "sidecar, no watchers (tracing off)"
    if row["server"] == "sidecar-watch500" and row.get("watchers") != 500:
        return f"sidecar, {row.get('watchers', 0)} idle watchers"
    return LABELS[row["server"]]


PHASE_OF_MODE = {
    "deliver": "throughput",
    "batch": "throughput",
    "watchers": "watchers",
    "latency": "latency",
    "scaling": "workers",
    "ghz": "ghz",
}


def phase_of(row: dict[str, Any]) -> str:
    """Which phase of the report a summary row belongs to."""
    if row["server"] == "sidecar-watch500":
        return "watchers"
    if row["server"] in HOOKS:
        return "hook"
    return PHASE_OF_MODE[row["mode"]]


def render_summary(rows: list[dict[str, Any]], batch_size: int) -> str:
    """Every phase in one Markdown table, each row against its reference."""
    lines = [
        "| phase | call | server | deliveries/s | p50 ms | p99 ms "
        "| server CPU s / 1k deliveries | compared with | throughput | CPU "
        "| p50 diff ms | p99 diff ms | not delivered |",
        "|" + "---|" * 13,
    ]
    for row in rows:
        ref = row.get("reference")
        if ref:
            versus = (
                f"| {row['reference_label']} | {row['throughput_vs_ref']:.2f}x "
                f"| {row['cpu_vs_ref']:.2f}x "
                f"| {row['p50_vs_ref_ms']:+.1f} | {row['p99_vs_ref_ms']:+.1f} "
            )
        else:
            versus = "| - | - | - | - | - "
        call = _call(row["mode"], batch_size)
        if row["mode"] in ("latency", "scaling"):
            call += f" at {row['offered_rate']:,.0f}/s"
        lines.append(
            f"| {phase_of(row)} | {call} | {_label(row)} | {row['deliveries_per_s']:,.0f} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['server_cpu_s_per_1k']:.3f} "
            f"{versus}| {row['not_delivered']} |"
        )
    return "\n".join(lines)


def render_table(rows: list[dict[str, Any]], batch_size: int) -> str:
    """The throughput phase as a Markdown table: the README Performance section's shape."""
    head = (
        "| call | server | deliveries/s | p50 ms | p99 ms | server CPU s / 1k deliveries "
        "| deliveries per server CPU-second | throughput vs forwarder | CPU vs forwarder "
        "| CPU vs forwarder, median of per-round ratios | not delivered |"
    )
    lines = [head, "|" + "---|" * 11]
    for row in rows:
        if row["mode"] not in ("deliver", "batch") or row["server"] not in (
            *BASE_SERVERS,
            *COMPARE_SERVERS,
        ):
            continue
        ratio = row.get("throughput_vs_ref")
        cpu_ratio = row.get("cpu_vs_ref")
        cpu_paired = row.get("cpu_vs_ref_paired")
        lines.append(
            f"| {_call(row['mode'], batch_size)} | {LABELS[row['server']]} "
            f"| {row['deliveries_per_s']:,.0f} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['server_cpu_s_per_1k']:.3f} "
            f"| {row['deliveries_per_cpu_s']:,.0f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'-' if cpu_ratio is None else f'{cpu_ratio:.2f}x'} "
            f"| {'-' if cpu_paired is None else f'{cpu_paired:.2f}x'} | {row['not_delivered']} |"
        )
    return "\n".join(lines)


def render_latency(rows: list[dict[str, Any]], target_ms: float) -> str:
    """The open-loop phase: p50/p99 side by side and what the sidecar adds."""
    lat = [r for r in rows if r["mode"] == "latency"]
    if not lat:
        return ""
    lines = [
        "| server | offered calls/s | answered calls/s | p50 ms | p99 ms "
        "| p50 added ms | p99 added ms | server CPU s / 1k | peak calls in flight "
        "| late starts | not delivered |",
        "|" + "---|" * 11,
    ]
    verdicts = []
    for row in lat:
        added50 = row.get("p50_vs_ref_ms")
        added99 = row.get("p99_vs_ref_ms")
        lines.append(
            f"| {LABELS[row['server']]} | {row['offered_rate']:,.0f} "
            f"| {row['deliveries_per_s']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {'-' if added50 is None else f'{added50:+.2f}'} "
            f"| {'-' if added99 is None else f'{added99:+.2f}'} "
            f"| {row['server_cpu_s_per_1k']:.3f} | {row['peak_in_flight']} "
            f"| {row['late_starts']} | {row['not_delivered']} |"
        )
        if row["deliveries_per_s"] < 0.97 * row["offered_rate"]:
            verdicts.append(
                f"{LABELS[row['server']]} answered fewer calls per second than were offered: "
                "it could not keep up, so its latency above is mostly time spent queueing"
            )
        if added99 is not None:
            verdict = "met" if added99 <= target_ms else "NOT met"
            verdicts.append(
                f"{LABELS[row['server']]}: p99 added {added99:+.2f} ms, target <= "
                f"{target_ms:g} ms: {verdict}"
            )
    return "\n".join([*lines, "", *verdicts])


def render_latency_rounds(phases: list[dict[str, Any]], server: str = "sidecar") -> str:
    """Every latency round of ``server`` beside the forwarder's of the same round: both
    p99s, the difference, both phases' steal, and whether the steal rule set the round aside.
    Nothing is left out, so a reader can see what the targets table's median was taken over.
    Other load (work on the machine that is not the benchmark's) is shown, not used: the
    declared rule is about steal only.
    """
    rounds = round_pairs(phases, "latency", server, "forwarder")
    if not rounds:
        return ""
    lines = [
        f"| round | forwarder p99 ms | {LABELS[server]} p99 ms | added p99 ms "
        "| steal, forwarder's phase (cores) | steal, sidecar's phase (cores) "
        "| other load, forwarder's / sidecar's phase (cores) | set aside |",
        "|" + "---|" * 8,
    ]
    for r, b, a in rounds:
        lines.append(
            f"| {r} | {a['p99_ms']:.2f} | {b['p99_ms']:.2f} | {b['p99_ms'] - a['p99_ms']:+.2f} "
            f"| {a.get('steal_cores', 0.0):.3f} | {b.get('steal_cores', 0.0):.3f} "
            f"| {a.get('other_load_cores', 0.0):.2f} / {b.get('other_load_cores', 0.0):.2f} "
            f"| {'yes: steal' if stolen(a, b) else 'no'} |"
        )
    found = paired(phases, "latency", server, "forwarder", "p99")
    if found is not None:
        lines += [
            "",
            f"Median of the per-round differences: {found['median']:+.2f} ms over "
            f"{found['used']} of {found['rounds']} rounds (range {found['low']:+.2f} to "
            f"{found['high']:+.2f}); {found['rounds'] - found['clean']} round(s) had more "
            f"than {STEAL_LIMIT_CORES:g} cores of steal"
            + ("" if found["used"] == found["clean"] else ", too many to set aside: all used"),
        ]
    return "\n".join(lines)


#: Loop-lag and GC-pause buckets of the tail probe, upper bounds in ms.
TAIL_BUCKETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, float("inf"))


def _buckets(values: list[float]) -> list[int]:
    counts = [0] * len(TAIL_BUCKETS_MS)
    for v in values:
        counts[next(i for i, top in enumerate(TAIL_BUCKETS_MS) if v < top)] += 1
    return counts


def _within(samples: list[list[float]], spans: list[tuple[float, float]]) -> list[float]:
    return [ms for t, ms in samples if any(lo <= t <= hi for lo, hi in spans)]


def render_tail_probe(
    probe: dict[str, Any], phases: list[dict[str, Any]], server: str = "sidecar"
) -> str:
    """What bench/tailprobe.py saw inside ``server`` during its latency phases: how late the
    event loop ran a callback (loop lag) and how long each GC collection took, by generation.
    """
    spans = [
        (p["t_began"], p["t_ended"])
        for p in phases
        if p["server"] == server and p["mode"] == "latency" and "t_began" in p
    ]
    if not spans:
        return ""
    heads = ["< 0.5", "0.5-1", "1-2", "2-5", "5-10", "10-20", ">= 20"]
    lines = [
        "| what (ms) | samples | " + " | ".join(heads) + " | max |",
        "|" + "---|" * (len(heads) + 3),
    ]
    series = [
        ("loop lag", _within(probe["lag_ms"], spans)),
        ("probe thread's late wake-up", _within(probe.get("wake_ms", []), spans)),
    ]
    series += [(f"GC gen {g} pause", _within(probe["gc_ms"][str(g)], spans)) for g in (0, 1, 2)]
    for name, values in series:
        counts = _buckets(values)
        top = f"{max(values):.2f}" if values else "-"
        lines.append(f"| {name} | {len(values)} | " + " | ".join(map(str, counts)) + f" | {top} |")
    seconds = sum(hi - lo for lo, hi in spans)
    lines += [
        "",
        f"Over the {len(spans)} latency phases of {LABELS[server]} ({seconds:.1f} s). Loop lag: "
        f"a thread asks the loop to run a callback every {PING_MS:g} ms and records how late "
        "it ran, so a lag of L ms means calls arriving then waited up to L ms before the loop "
        "could look at them. The probe thread's late wake-up is how long after its 2 ms sleep "
        "it got the GIL and a core back: a stall of the whole process.",
    ]
    return "\n".join(lines)


#: bench/tailprobe.py's ping interval, for the report's wording.
PING_MS = 2.0


def render_scaling(rows: list[dict[str, Any]], target: float) -> str:
    """The workers phase: one worker and two at the same open-loop rate per worker.

    On a machine with as many spare cores as workers, N workers deliver N times one worker's
    rate if each event costs the same CPU however many workers share the load; this phase
    measures that cost below saturation, where the load generator and the upstream are not
    short of CPU, so it holds on a 2-core machine too.
    """
    picked = [r for r in rows if r["mode"] == "scaling"]
    if not picked:
        return ""
    lines = [
        "| server | offered calls/s | per worker | answered calls/s | p50 ms | p99 ms "
        "| server CPU s / 1k | CPU vs one worker | busiest worker's CPU share | not delivered |",
        "|" + "---|" * 10,
    ]
    verdicts = []
    for row in picked:
        workers = 2 if row["server"] == "sidecar-workers2" else 1
        ratio = row.get("cpu_vs_ref")
        share = row.get("busiest_worker_share")
        lines.append(
            f"| {LABELS[row['server']]} | {row['offered_rate']:,.0f} "
            f"| {row['offered_rate'] / workers:,.0f} | {row['deliveries_per_s']:,.0f} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['server_cpu_s_per_1k']:.3f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'-' if share is None else f'{share:.0%}'} | {row['not_delivered']} |"
        )
        if ratio is not None:
            verdict = "flat" if ratio <= target else "NOT flat"
            verdicts.append(
                f"{LABELS[row['server']]}: CPU per event {ratio:.2f}x one worker's at the same "
                f"rate per worker (flat means <= {target:.2f}x): {verdict}"
            )
    return "\n".join([*lines, "", *verdicts])


def render_watchers(rows: list[dict[str, Any]], batch_size: int) -> str:
    """The watchers phase: the same sidecar with and without idle watch streams."""
    picked = [
        r
        for r in rows
        if r["server"] == "sidecar-watch500"
        or (r["server"] == "sidecar" and r["mode"] == "watchers")
        or (r["server"] == "sidecar" and r["mode"] == "batch" and _has_watched_batch(rows))
    ]
    if not picked:
        return ""
    lines = [
        "| call | idle watchers | deliveries/s | p50 ms | p99 ms | server CPU s / 1k "
        "| throughput vs none | CPU vs none | not delivered |",
        "|" + "---|" * 9,
    ]
    for row in picked:
        ratio, cpu = row.get("throughput_vs_ref"), row.get("cpu_vs_ref")
        lines.append(
            f"| {_call(row['mode'], batch_size)} | {row.get('watchers', 0)} "
            f"| {row['deliveries_per_s']:,.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['server_cpu_s_per_1k']:.3f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'-' if cpu is None else f'{cpu:.2f}x'} | {row['not_delivered']} |"
        )
    return "\n".join(lines)


def _has_watched_batch(rows: list[dict[str, Any]]) -> bool:
    return any(r["server"] == "sidecar-watch500" and r["mode"] == "batch" for r in rows)


def render_tools(rows: list[dict[str, Any]]) -> str:
    """The same closed-loop Deliver load from our load generator and from ghz, per server."""
    ghz_servers = [r["server"] for r in rows if r["mode"] == "ghz"]
    lines = [
        "| server | load tool | deliveries/s | p50 ms | p99 ms | server CPU s / 1k "
        "| load tool CPU s / 1k |",
        "|" + "---|" * 7,
    ]
    for name in ghz_servers:
        for row in rows:
            if row["server"] == name and row["mode"] in ("deliver", "ghz"):
                tool = "ghz" if row["mode"] == "ghz" else "bench/loadgen.py"
                lines.append(
                    f"| {LABELS[name]} | {tool} | {row['deliveries_per_s']:,.0f} "
                    f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
                    f"| {row['server_cpu_s_per_1k']:.3f} | {row['loadgen_cpu_s_per_1k']:.3f} |"
                )
    return "\n".join(lines)


def render_notes(
    rows: list[dict[str, Any]], upstream: Upstream, batch_size: int, spans: dict[str, float]
) -> str:
    """Secondary numbers: spread, whether the upstream or load generator is a bottleneck."""
    lines = [
        "| call | server | deliveries/s min-max | server cores busy | upstream CPU s/1k "
        "| load generator CPU s/1k | other load on the machine (cores) "
        "| taken by the hypervisor (steal, cores) |",
        "|" + "---|" * 8,
    ]
    for row in rows:
        upstream_cpu = f"{row['upstream_cpu_s_per_1k']:.3f}"  # not measured when external
        lines.append(
            f"| {_call(row['mode'], batch_size)} | {_label(row)} "
            f"| {row['deliveries_per_s_min']:,.0f}-{row['deliveries_per_s_max']:,.0f} "
            f"| {row['server_cores']:.2f} "
            f"| {upstream_cpu if upstream.child else '-'} | {row['loadgen_cpu_s_per_1k']:.3f} "
            f"| {row['other_load_cores']:.2f} | {row['steal_cores']:.2f} |"
        )
    lines.append(f"\nupstream: {upstream.kind} {upstream.url}")
    for name, per_event in spans.items():
        lines.append(f"spans exported per event sent, {LABELS[name]}: {per_event:.2f}")
    return "\n".join(lines)


def spans_per_event(
    phases: list[dict[str, Any]], counter: SpanCounter, servers: list[str]
) -> dict[str, float]:
    """Spans the sink received per event sent (warm-up included), for the traced servers."""
    out = {}
    for name in servers:
        if not name.startswith("sidecar-trace"):
            continue
        sent = sum(
            p["events"] + sum(p["warmup_outcomes"].values()) for p in phases if p["server"] == name
        )
        out[name] = counter.spans[f"bench-{name}"] / max(sent, 1)
    return out


# ----------------------------------------------------------------------------- main


def _names(
    text: str, flag: str, parser: argparse.ArgumentParser, allowed: tuple[str, ...]
) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = set(names) - set(allowed)
    if unknown:
        parser.error(f"{flag}: unknown {sorted(unknown)}; choose from {list(allowed)}")
    return [s for s in allowed if s in names]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; ``--quick`` shrinks everything to a smoke run."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Sidecar vs. a bare grpc.aio->aiohttp forwarder: throughput, CPU, latency.",
    )
    parser.add_argument("--upstream", help="POST deliveries to this URL instead of local nginx")
    parser.add_argument(
        "--sandbox", action="store_true", help="use the sandbox as the upstream (correctness)"
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--deliver-calls", type=int, default=3000, help="Deliver calls per phase")
    parser.add_argument("--batches", type=int, default=200, help="DeliverBatch calls per phase")
    parser.add_argument("--batch-size", type=int, default=20, help="events per DeliverBatch")
    parser.add_argument("--concurrency", type=int, default=64, help="Deliver calls in flight")
    parser.add_argument(
        "--channels",
        type=int,
        help="gRPC connections per load generator (default 1; 4 with --compare-workers, since "
        "the kernel spreads connections, not calls, over the workers), for every server",
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=8, help="DeliverBatch calls in flight"
    )
    parser.add_argument("--warmup-calls", type=int, default=300, help="unmeasured, per phase")
    parser.add_argument("--warmup-batches", type=int, default=15, help="unmeasured, per phase")
    parser.add_argument(
        "--servers",
        default=",".join(BASE_SERVERS),
        help=f"throughput phase: comma-separated subset of {','.join(BASE_SERVERS)}",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="latency phase: calls/s (default: half the forwarder's median Deliver rate)",
    )
    parser.add_argument("--latency-calls", type=int, default=3000, help="latency phase: calls")
    parser.add_argument(
        "--latency-servers", default="forwarder,sidecar", help="latency phase: which servers"
    )
    parser.add_argument(
        "--latency-target-ms", type=float, default=2.0, help="latency phase: allowed added p99"
    )
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=9,
        help="latency phase: rounds, each server once per round, interleaved (default 9: more "
        "pairs for the median of per-round p99 differences; a round is a few seconds)",
    )
    parser.add_argument(
        "--tail-probe",
        action="store_true",
        help="run the tracing-off sidecar under bench/tailprobe.py and report its loop lag and "
        "GC pauses during the latency phase",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="taskset: every server on CPU 1, nginx, the load generators and the driver on "
        "CPU 0 (2 CPUs or more; the servers then share one core, one at a time)",
    )
    parser.add_argument(
        "--workers-rate",
        type=float,
        help="workers phase (--compare-workers): calls/s per worker (default: half the latency "
        "phase's rate, so two workers get that rate)",
    )
    parser.add_argument(
        "--workers-calls",
        dest="scaling_calls",
        type=int,
        default=1500,
        help="workers phase: calls per worker (one worker gets this many, two get twice as many)",
    )
    parser.add_argument(
        "--workers-channels",
        type=int,
        default=16,
        help="workers phase: gRPC connections per load generator (default 16: the kernel hands "
        "each connection to one worker, and 4 connections often split 3:1)",
    )
    parser.add_argument(
        "--workers-cpu-target",
        type=float,
        default=1.10,
        help="workers phase: the most CPU per event two workers may cost against one for it "
        "to count as flat",
    )
    parser.add_argument("--watchers", type=int, default=500, help="watchers phase: streams")
    parser.add_argument(
        "--watchers-calls", type=int, default=1000, help="watchers phase: Deliver calls"
    )
    parser.add_argument(
        "--watchers-batch", action="store_true", help="watchers phase: DeliverBatch too"
    )
    parser.add_argument(
        "--ghz",
        default="auto",
        help="ghz phase: a ghz binary (default: the pinned build of tools/install-ghz.sh)",
    )
    parser.add_argument("--ghz-servers", default="forwarder,sidecar", help="ghz phase: servers")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the phases, record py-spy on a sidecar (--profile-server) under load",
    )
    parser.add_argument(
        "--profile-server",
        default="sidecar",
        metavar="NAME",
        help="--profile: which server, by its name in this script (sidecar, sidecar-durable, "
        "sidecar-trace10, ...; default sidecar, the tracing-off one)",
    )
    parser.add_argument(
        "--profile-call",
        choices=("deliver", "batch"),
        default="deliver",
        help="--profile: the load while py-spy records, Deliver calls or DeliverBatch calls",
    )
    parser.add_argument(
        "--profile-format",
        choices=("raw", "flamegraph", "speedscope"),
        default="raw",
        help="py-spy output: raw (folded stacks, summarised here), flamegraph (SVG), speedscope",
    )
    parser.add_argument(
        "--profile-out", type=Path, help="where py-spy writes (default: .cache/bench/profile-*)"
    )
    for server, (flag, _field, variable) in HOOKS.items():
        on = server in BUILT
        parser.add_argument(
            flag,
            dest=server.replace("-", "_"),
            action=argparse.BooleanOptionalAction if on else "store_true",
            default=on,
            help=f"{'' if on else 'HOOK: '}also run {LABELS[server]} ({variable}) vs the "
            f"plain sidecar{' (default: on)' if on else ''}",
        )
    parser.add_argument(
        "--pure",
        action="store_true",
        help="run this work tree's sidecars from the Python source instead of the build the "
        "image ships (hot modules compiled with mypyc, tools/compile.py)",
    )
    parser.add_argument(
        "--compare-rev",
        metavar="REV",
        help="also run the sidecar of git revision REV (tracing off and parent-based 10%%) "
        "in the same rounds: a before/after measured side by side",
    )
    parser.add_argument(
        "--customers",
        type=int,
        help="spread the events over N customers, for every server (default: 10000 with "
        "--compare-durable, whose queue serialises each customer's events; else 0, the "
        "example events' one customer)",
    )
    parser.add_argument(
        "--durable-mode",
        choices=("wait", "enqueue"),
        default="wait",
        help="SIDECAR_DELIVERY_MODE of the durable sidecar (--compare-durable); default wait",
    )
    parser.add_argument(
        "--sidecar-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the sidecars (repeatable), e.g. SIDECAR_LOG_LEVEL=WARNING",
    )
    parser.add_argument("--events", type=Path, default=ROOT / "examples" / "events")
    parser.add_argument("--phase-timeout", type=float, default=180.0, help="seconds per phase")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench")
    parser.add_argument(
        "--report", type=Path, default=BENCH / "last-run.md", help="Markdown report to write"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 small round")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.latency_rounds = 1
        args.deliver_calls, args.batches, args.latency_calls = 400, 25, 400
        args.scaling_calls = 200
        args.watchers_calls = 200
        args.warmup_calls, args.warmup_batches = 50, 3
    args.phases = _names(args.phases, "--phases", parser, PHASES)
    args.servers = _names(args.servers, "--servers", parser, BASE_SERVERS)
    args.latency_servers = _names(args.latency_servers, "--latency-servers", parser, BASE_SERVERS)
    args.ghz_servers = _names(args.ghz_servers, "--ghz-servers", parser, BASE_SERVERS)
    args.hooks = [server for server in HOOKS if getattr(args, server.replace("-", "_"))]
    LABELS["sidecar-durable"] = f"sidecar, durable ({args.durable_mode})"
    if args.customers is None:
        args.customers = 10_000 if args.sidecar_durable else 0
    if args.channels is None:
        args.channels = 4 if "sidecar-workers2" in args.hooks else 1
    if "sidecar-workers2" in args.hooks and "sidecar-workers2" not in args.latency_servers:
        # What two workers do to latency at the same offered rate, beside one worker.
        args.latency_servers.append("sidecar-workers2")
    # This work tree's sidecars run as the image ships them unless --pure (the build is made
    # once for a source tree and reused: tools/compile.py).
    args.site = None if args.pure else _compiled_site()
    return args


def _compiled_site() -> Path:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import compile as compiled_build  # noqa: PLC0415 - tools/compile.py, only when needed
    finally:
        sys.path.pop(0)
    site: Path = compiled_build.build()
    return site


def extract_revision(rev: str, into: Path) -> None:
    """``server/`` of git revision ``rev`` under ``into`` (``git archive``, no checkout)."""
    into.mkdir(parents=True)
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "server"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"--compare-rev {rev}: git archive failed: {exc}") from None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    print(f"bench: base revision {rev} extracted for {', '.join(COMPARE_SERVERS)}", flush=True)


def settings_has(field: str) -> bool:
    """Whether the sidecar's Settings has ``field`` (the feature behind a hook exists)."""
    from bluecore_sidecar import config  # noqa: PLC0415 - only for the hooks

    return field in {f.name for f in dataclasses.fields(config.Settings)}


def find_ghz(args: argparse.Namespace) -> str | None:
    """The ghz binary: ``--ghz PATH``, or the pinned build (made once by tools/install-ghz.sh)."""
    if args.ghz != "auto":
        return str(args.ghz)
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "tools" / "install-ghz.sh")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            timeout=900,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"WARNING: ghz phase skipped: tools/install-ghz.sh failed: {exc}", flush=True)
        return None
    if done.returncode != 0 or not done.stdout.strip():
        print("WARNING: ghz phase skipped: tools/install-ghz.sh could not build ghz", flush=True)
        return None
    return done.stdout.strip().splitlines()[-1]


def plan(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """Closed-loop modes per server for every round (the throughput and watchers phases)."""
    modes: dict[str, tuple[str, ...]] = {}
    if "throughput" in args.phases:
        modes.update(dict.fromkeys(args.servers, ("deliver", "batch")))
    if "watchers" in args.phases:
        modes["sidecar"] = (*modes.get("sidecar", ()), "watchers")
        modes["sidecar-watch500"] = ("watchers",)
        if args.watchers_batch:
            modes["sidecar-watch500"] += ("batch",)
            if "batch" not in modes["sidecar"]:
                modes["sidecar"] += ("batch",)
    if args.compare_rev:
        modes.update(dict.fromkeys(COMPARE_SERVERS, ("deliver", "batch")))
    for hook in args.hooks:
        modes.setdefault("sidecar", ("deliver", "batch"))
        modes[hook] = ("deliver", "batch")
    return {name: modes[name] for name in SERVERS if name in modes}


def rounds_order(servers: list[str], rounds: int) -> Iterator[tuple[int, list[str]]]:
    """Round-robin with a rotating start, so no server always goes first or last."""
    for r in range(rounds):
        shift = r % len(servers) if servers else 0
        yield r + 1, servers[shift:] + servers[:shift]


def profile_command(args: argparse.Namespace, pid: int, stamp: str) -> tuple[list[str], Path]:
    """The py-spy command line, and where it writes."""
    suffix = {"raw": "folded", "flamegraph": "svg", "speedscope": "speedscope.json"}
    out = args.profile_out or args.out / f"profile-{stamp}.{suffix[args.profile_format]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    cmd = [
        spy,
        "record",
        f"--pid={pid}",
        f"--duration={args.profile:g}",
        f"--format={args.profile_format}",
        f"--output={out}",
        "--rate=100",
        "--threads",  # stacks start with the thread: the event loop or gRPC's poller
    ]
    return cmd, out


def summarise_profile(folded: Path, top: int = 15) -> str:
    """Top frames of a py-spy raw (folded) profile: by own samples and by inclusive samples.

    Frames are grouped by function and file (line numbers dropped) so one function's lines
    add up; a frame counts once per sample however often it recurs in that stack.
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames[0].startswith("thread ("):  # py-spy --threads: "thread (TID): NAME"
            threads[frames.pop(0).partition(": ")[2] or "?"] += count
        if not frames:
            continue
        names = [_frame_name(f) for f in frames]
        own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return "py-spy recorded no samples"
    lines = [f"{total} samples (100 a second per busy thread)", ""]
    if threads:
        lines += ["| thread | % of samples |", "|---|---|"]
        lines += [f"| {name} | {100 * n / total:.1f} |" for name, n in threads.most_common()]
        lines.append("")
    lines += ["| own % | frame |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f} | `{f}` |" for f, n in own.most_common(top)]
    # The frames under which everything runs (runpy, asyncio.run, run_forever...) say nothing.
    ceiling = 0.98 * max(inclusive.values())
    telling = [(f, n) for f, n in inclusive.most_common() if n < ceiling][:top]
    lines += ["", "| inclusive % | frame |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f} | `{f}` |" for f, n in telling]
    return "\n".join(lines)


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``; thread and process names kept."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.rsplit("/server/", 1)[-1]
    return f"{name} ({path})"


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    """Start everything, run the phases, print and save the report, stop everything."""
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    facts = machine_facts()
    notes: list[str] = []
    print(
        f"bench: {facts['nproc']} CPUs, Python {facts['python']}, {args.rounds} round(s); "
        f"phases {','.join(args.phases)}; {args.deliver_calls} Deliver (x{args.concurrency} "
        f"in flight) and {args.batches} DeliverBatch x{args.batch_size} "
        f"(x{args.batch_concurrency} in flight) per server and round",
        flush=True,
    )
    for hook in list(args.hooks):
        flag, field, variable = HOOKS[hook]
        if not settings_has(field):
            note = (
                f"{flag}: skipped, not built: bluecore_sidecar.config.Settings has no "
                f"{field!r} field, so {variable} would be ignored and the number would be the "
                "plain sidecar's"
            )
            print(f"WARNING: {note}", flush=True)
            notes.append(note)
            args.hooks.remove(hook)
    if args.pin:
        if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
            raise BenchError("--pin needs 2 CPUs and taskset (util-linux)")
        os.sched_setaffinity(0, {LOAD_CPU})
        notes.append(
            f"--pin: every server on CPU {SERVER_CPU}; nginx, the load generators and this "
            f"driver on CPU {LOAD_CPU} (taskset)"
        )
    if args.tail_probe:
        notes.append(
            "--tail-probe: the tracing-off sidecar ran under bench/tailprobe.py (a GC timer and "
            f"a loop ping every {PING_MS:g} ms, which cost it a little CPU)"
        )
    if args.customers:
        notes.append(
            f"events spread over {args.customers} customers (--customers), for every server: "
            "the durable queue sends one customer's events one at a time, in order"
        )
    if "sidecar-durable" in args.hooks:
        notes.append(
            f"durable sidecar: SIDECAR_DELIVERY_MODE={args.durable_mode}; each of its phases "
            "starts with an empty queue and ends when the queue is empty again"
        )
    if args.channels > 1:
        notes.append(
            f"every load generator spread its calls over {args.channels} gRPC connections "
            "(--channels), for every server alike"
        )
    ghz = find_ghz(args) if "ghz" in args.phases else None
    if "ghz" in args.phases and ghz is None:
        notes.append("ghz phase skipped: no ghz binary (see the WARNING above)")
    closed = plan(args)
    latency_servers = args.latency_servers if "latency" in args.phases else []
    ghz_servers = args.ghz_servers if ghz else []
    # The workers phase runs with --compare-workers whenever the latency phase does.
    scaling = "sidecar-workers2" in args.hooks and "latency" in args.phases
    needed = set(closed) | set(latency_servers) | set(ghz_servers)
    if scaling:
        needed.update(SCALING_SERVERS)
    if args.profile:
        if args.profile_server not in LABELS or args.profile_server == "forwarder":
            raise BenchError(
                f"--profile-server {args.profile_server}: not a sidecar of this script "
                f"(one of {', '.join(n for n in LABELS if n != 'forwarder')})"
            )
        if args.profile_server.endswith("-base") and not args.compare_rev:
            raise BenchError(f"--profile-server {args.profile_server} needs --compare-rev REV")
        needed.add(args.profile_server)
    args.all_servers = [name for name in SERVERS if name in needed]
    children: list[Child] = []
    sink: grpc.aio.Server | None = None
    phases: list[dict[str, Any]] = []
    profile_out: Path | None = None
    ghz_example = ""
    latency_rate = 0.0
    scaling_rate = 1.0 if scaling else 0.0  # set to its real value once latency_rate is known
    try:
        sink, counter, sink_port = await start_sink()
        upstream = await start_upstream(args, workdir)
        if upstream.child:
            children.append(upstream.child)
        print(f"bench: upstream {upstream.kind} at {upstream.url}", flush=True)
        if args.compare_rev:
            extract_revision(args.compare_rev, workdir / "base")
        servers = await start_servers(args, workdir, upstream, sink_port, children)
        for round_no, order in rounds_order(list(closed), args.rounds):
            for name in order:
                watched = servers[name].watchers is not None
                if watched:
                    await reopen_watchers(servers[name], args.watchers, workdir)
                for mode in closed[name]:
                    await clear_sandbox(upstream)
                    phases.append(
                        await run_phase(args, servers[name], mode, round_no, upstream, workdir)
                    )
                if watched:
                    # Streams that never read still take the outcomes of that phase, at the
                    # bus's pace (500 a second, about 0.2 cores), for minutes after it: left
                    # open, they would load the machine under every phase that follows.
                    await close_watchers(servers[name])
            for name in order_of(ghz_servers, round_no):
                await clear_sandbox(upstream)
                phase = await run_ghz_phase(args, servers[name], round_no, upstream, workdir, ghz)
                ghz_example = ghz_example or phase["command"]
                phases.append(phase)
        if latency_servers or scaling_rate:
            latency_rate = args.latency_rate or half_forwarder_rate(phases)
            if scaling_rate:
                scaling_rate = args.workers_rate or latency_rate / 2
        if latency_servers:
            print(
                f"bench: latency phase, open loop at {latency_rate:,.0f} Deliver calls/s"
                + ("" if args.latency_rate else " (half the forwarder's median Deliver rate)"),
                flush=True,
            )
            for round_no in range(1, args.latency_rounds + 1):
                for name in order_of(latency_servers, round_no):
                    await clear_sandbox(upstream)
                    phases.append(
                        await run_phase(
                            args,
                            servers[name],
                            "latency",
                            round_no,
                            upstream,
                            workdir,
                            rate=latency_rate,
                            calls=args.latency_calls,
                        )
                    )
        if scaling_rate:
            print(
                f"bench: workers phase, open loop: one worker at {scaling_rate:,.0f} calls/s, "
                f"two workers at {2 * scaling_rate:,.0f} calls/s (the same rate per worker)",
                flush=True,
            )
            for round_no in range(1, args.rounds + 1):
                for name in order_of(list(SCALING_SERVERS), round_no):
                    await clear_sandbox(upstream)
                    workers = 2 if name == "sidecar-workers2" else 1
                    phases.append(
                        await run_phase(
                            args,
                            servers[name],
                            "scaling",
                            round_no,
                            upstream,
                            workdir,
                            rate=workers * scaling_rate,
                            calls=workers * args.scaling_calls,
                            channels=args.workers_channels,
                        )
                    )
        if args.profile:
            profile_out = await record_profile(
                args, servers[args.profile_server], upstream, workdir, stamp, phases
            )
        # SIGTERM makes each sidecar flush its spans; the sink stays up until they are in.
        await asyncio.gather(*(close_watchers(s) for s in servers.values()))
        await asyncio.gather(*(stop_child(s.child) for s in servers.values()))
        exit_codes = {name: s.child.proc.returncode for name, s in servers.items()}
    finally:
        await asyncio.gather(*(stop_child(c) for c in children))
        if sink is not None:
            await sink.stop(0)
    rows = summarise(phases, args.all_servers)
    spans = spans_per_event(phases, counter, args.all_servers)
    sections = []
    if "throughput" in args.phases:
        sections.append(("Throughput (closed loop)", render_table(rows, args.batch_size)))
    if latency_servers:
        sections.append(
            (
                f"Latency (open loop at {latency_rate:,.0f} Deliver calls/s)",
                render_latency(rows, args.latency_target_ms),
            )
        )
    if latency_servers:
        sections.append(("Latency, round by round (the pairs)", render_latency_rounds(phases)))
    probe_file = workdir / TAIL_PROBE_FILE
    if args.tail_probe and probe_file.exists():
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(probe_file, args.out / f"tailprobe-{stamp}.json")  # every raw sample
        probe_text = render_tail_probe(json.loads(probe_file.read_text()), phases)
        if probe_text:
            sections.append(("Tail probe: loop lag and GC pauses in the sidecar", probe_text))
    if scaling:
        sections.append(
            (
                "Workers at the same rate per worker (open loop)",
                render_scaling(rows, args.workers_cpu_target),
            )
        )
    if "watchers" in args.phases:
        sections.append(
            (
                f"Idle watchers ({args.watchers} WatchDeliveries streams that never read)",
                render_watchers(rows, args.batch_size),
            )
        )
    if ghz_example:
        sections.append(("ghz beside bench/loadgen.py (closed loop)", render_tools(rows)))
        sections.append(("ghz command (first measured phase)", f"```\n{ghz_example}\n```"))
    if profile_out is not None:
        summary = (
            summarise_profile(profile_out)
            if args.profile_format == "raw"
            else f"written to {profile_out}"
        )
        call = "Deliver" if args.profile_call == "deliver" else f"DeliverBatch x{args.batch_size}"
        sections.append(
            (f"py-spy profile of {LABELS[args.profile_server]} under {call} load", summary)
        )
    sections.append(("Notes", render_notes(rows, upstream, args.batch_size, spans)))
    summary_table = render_summary(rows, args.batch_size)
    targets = render_targets(phases)
    for title, body in sections:
        print(f"\n## {title}\n\n{body}")
    print("\n## Summary\n\n" + summary_table)
    print("\n## Targets (per-round pairs)\n\n" + targets)
    for note in notes:
        print(f"\nNOTE: {note}")
    failures = sum(p["not_delivered"] for p in phases)
    git = git_state()
    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": facts,
        "git": git,
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("out",)
        },
        "upstream": {"kind": upstream.kind, "url": upstream.url},
        "latency_rate": latency_rate,
        "server_exit_codes": exit_codes,
        "spans_received": dict(counter.spans),
        "spans_per_event": spans,
        "notes": notes,
        "summary": rows,
        "phases": phases,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(args, report, summary_table, sections, path, targets)
    print(f"\nraw numbers: {_rel(path)}; report: {_rel(args.report)}")
    if failures:
        print(f"ERROR: {failures} events were not DELIVERED; the numbers above are not valid")
        return 1
    bad_exits = {k: v for k, v in exit_codes.items() if v != 0}
    if bad_exits:
        print(f"ERROR: servers did not exit cleanly on SIGTERM: {bad_exits}")
        return 1
    return 0


def _took(started: str, finished: str) -> str:
    seconds = int(
        (dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)).total_seconds()
    )
    return f"{seconds // 60} min {seconds % 60} s"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def order_of(servers: list[str], round_no: int) -> list[str]:
    """``servers`` rotated by the round number."""
    if not servers:
        return []
    shift = (round_no - 1) % len(servers)
    return servers[shift:] + servers[:shift]


def half_forwarder_rate(phases: list[dict[str, Any]]) -> float:
    """Half the forwarder's median closed-loop Deliver rate in this run."""
    rates = [
        p["deliveries_per_s"]
        for p in phases
        if p["server"] == "forwarder" and p["mode"] == "deliver"
    ]
    if not rates:
        raise BenchError(
            "the latency phase needs the forwarder's Deliver rate: keep the throughput phase "
            "with the forwarder, or pass --latency-rate CALLS_PER_S"
        )
    return statistics.median(rates) / 2


async def record_profile(
    args: argparse.Namespace,
    server: Server,
    upstream: Upstream,
    workdir: Path,
    stamp: str,
    phases: list[dict[str, Any]],
) -> Path:
    """A py-spy recording of ``server`` while it serves closed-loop calls (unmeasured):
    ``Deliver`` calls, or ``DeliverBatch`` calls with ``--profile-call batch``.

    The load stops a second after the recording (py-spy pauses the process for each
    sample, so the sidecar is slower than unprofiled), and every sample is taken under load.
    """
    pid = server.child.proc.pid
    cmd, out = profile_command(args, pid, stamp)
    mode = args.profile_call
    rates = [
        p["deliveries_per_s"] for p in phases if p["server"] == server.name and p["mode"] == mode
    ]
    rate = statistics.median(rates) if rates else 1000.0
    per_call = 1 if mode == "deliver" else args.batch_size
    # More calls than it can answer in that time.
    calls = max(1, int(2 * rate * (args.profile + 5) / per_call))
    print(
        f"bench: profiling {server.name} (pid {pid}) under {mode} load: " + " ".join(cmd),
        flush=True,
    )
    phase = await run_phase(
        args,
        server,
        mode,
        0,
        upstream,
        workdir,
        calls=calls,
        profile=cmd,
        max_seconds=args.profile + 1,
    )
    if phase["wall_s"] < args.profile:
        print(
            f"WARNING: the load ended {args.profile - phase['wall_s']:.1f} s before py-spy did",
            flush=True,
        )
    return out


def write_markdown(
    args: argparse.Namespace,
    report: dict[str, Any],
    summary_table: str,
    sections: list[tuple[str, str]],
    raw: Path,
    targets: str = "",
) -> None:
    """bench/last-run.md: when, which commit, the command, the targets, the summary, then
    the details."""
    git = report["git"]
    dirty = " (with uncommitted changes in server/)" if git["server_uncommitted"] else ""
    facts = report["machine"]
    head = [
        f"# bench: last run, {report['started']} to {report['finished']}",
        "",
        f"- command: `{report['command']}`, which is what `make bench"
        + (f' BENCH_ARGS="{" ".join(sys.argv[1:])}"' if sys.argv[1:] else "")
        + "` runs; it took "
        + _took(report["started"], report["finished"]),
        f"- commit: `{git['commit'][:12]}`{dirty}",
        "- build: "
        + (
            "this work tree's sidecars from the Python source (`--pure`)"
            if args.site is None
            else "this work tree's sidecars as the image ships them, the hot modules compiled "
            "with mypyc (tools/compile.py)"
        ),
        f"- machine: {facts['nproc']} CPUs, {facts['cpu_model']}, Python {facts['python']}, "
        f"grpcio {facts['grpcio']}, aiohttp {facts['aiohttp']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in facts['loadavg_at_start'])}",
        f"- rounds: {args.rounds} (medians), latency phase {args.latency_rounds}; raw numbers: "
        f"`{_rel(raw)}`",
    ]
    if args.quick:
        head.append("- **--quick: a smoke run of the harness, not a measurement**")
    head += [f"- NOTE: {note}" for note in report["notes"]]
    body = ["", "## Targets (per-round pairs)", "", targets] if targets else []
    body += ["", "## Summary", "", summary_table]
    for title, text in sections:
        body += ["", f"## {title}", "", text]
    args.report.write_text("\n".join(head + body) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make bench``."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bluecore-bench-") as tmp:
        workdir = Path(tmp)
        try:
            return asyncio.run(_with_sigterm(bench(args, workdir)))
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("bench: interrupted; child processes stopped", file=sys.stderr)
            return 130


async def _with_sigterm(coro: Any) -> int:
    """Run ``coro``, turning SIGTERM into cancellation so the cleanup still runs."""
    task = asyncio.ensure_future(coro)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    result: int = await task
    return result


if __name__ == "__main__":
    sys.exit(main())
