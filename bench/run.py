"""``make bench``: the sidecar against a bare forwarder, and the cost of tracing, in one run.

The driver starts, as child processes on free loopback ports: an upstream that answers 202
(nginx from Debian, else the sandbox with a warning, or any ``--upstream URL``), the yardstick
forwarder (``bench/forwarder.py``), and three sidecars (``python -m bluecore_sidecar serve``):
tracing off, tracing on at 100% (``always_on``) and parent-based 10%
(``parentbased_traceidratio``, 0.1), the traced ones exporting OTLP/gRPC to a span-counting
sink inside this process. Each phase is one load-generator process (``bench/loadgen.py``)
sending Deliver or DeliverBatch calls to one server; phases are interleaved in rounds and the
report gives medians over rounds. Every child is stopped on exit, error, Ctrl-C or SIGTERM.

See bench/README.md for the method and the latest numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
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
from bluecore_sidecar.localrun import free_port

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from otlp_sink import SpanCounter, start_sink  # noqa: E402 - needs the path above

PY = sys.executable
EVENTS_PATH = "/api/track/mobile/v1"
NAMESPACE = "bench-namespace"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The servers under test, in the order of the report.
SERVERS = ("forwarder", "sidecar", "sidecar-trace100", "sidecar-trace10")
LABELS = {
    "forwarder": "forwarder (yardstick)",
    "sidecar": "sidecar, tracing off",
    "sidecar-trace100": "sidecar, tracing 100%",
    "sidecar-trace10": "sidecar, parent-based 10%",
}
MODES = ("deliver", "batch")


class BenchError(Exception):
    """The benchmark cannot go on; printed as one line, exit 1."""


@dataclasses.dataclass
class Child:
    """A child process the driver owns, with the file its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds of the process (all its threads) so far."""
        return proc_cpu_seconds(self.proc.pid)

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


# ----------------------------------------------------------------------------- measurement


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


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
        child = spawn("nginx", cmd, workdir)
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


def server_env(name: str, address: str, upstream: str, sink_port: int, extra: list[str]) -> dict:
    """The environment of one sidecar: ours only, nothing inherited from SIDECAR_/OTEL_."""
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
    for name in args.servers:
        address = f"127.0.0.1:{free_port()}"
        if name == "forwarder":
            cmd = [PY, str(BENCH / "forwarder.py"), "--listen", address, "--upstream", upstream.url]
            child = spawn(name, cmd, workdir)
        else:
            env = server_env(name, address, upstream.url, sink_port, args.sidecar_env)
            child = spawn(name, [PY, "-m", "bluecore_sidecar", "serve"], workdir, env)
        children.append(child)
        servers[name] = Server(name, address, child)
    await asyncio.gather(*(wait_grpc(server) for server in servers.values()))
    return servers


# ----------------------------------------------------------------------------- phases


@dataclasses.dataclass
class Snapshot:
    """Counters read just before and just after a measured phase."""

    server_cpu: float
    upstream_cpu: float
    driver_cpu: float
    host_busy: int
    host_total: int

    @classmethod
    def take(cls, server: Server, upstream: Upstream) -> Snapshot:
        busy, total = host_cpu()
        return cls(
            server_cpu=server.child.cpu_seconds(),
            upstream_cpu=upstream.child.cpu_seconds() if upstream.child else 0.0,
            driver_cpu=proc_cpu_seconds(os.getpid()),
            host_busy=busy,
            host_total=total,
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
) -> dict[str, Any]:
    """One load-generator run against one server; the raw numbers of the phase."""
    deliver = mode == "deliver"
    calls = args.deliver_calls if deliver else args.batches
    cmd = [
        PY,
        str(BENCH / "loadgen.py"),
        f"--target={server.address}",
        f"--mode={mode}",
        f"--calls={calls}",
        f"--warmup={args.warmup_calls if deliver else args.warmup_batches}",
        f"--batch-size={args.batch_size}",
        f"--concurrency={args.concurrency if deliver else args.batch_concurrency}",
        f"--prefix={server.name}-r{round_no}-{mode}-{time.time_ns()}",
        f"--events={args.events}",
    ]
    log = (workdir / f"loadgen-{server.name}-{mode}-r{round_no}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
        start_new_session=True,
    )
    label = f"  round {round_no} {LABELS[server.name]:<26} {mode:<8}"
    try:
        async with asyncio.timeout(args.phase_timeout):
            ready = await read_message(proc)
            if "ready" not in ready:
                raise BenchError(f"unexpected message from the load generator: {ready}")
            before = Snapshot.take(server, upstream)
            began = time.monotonic()
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            shown = began
            while "result" not in (message := await read_message(proc)):
                now = time.monotonic()
                if "progress" in message and now - shown >= 5:
                    print(f"{label} ... {message['progress']}/{calls} calls", flush=True)
                    shown = now
            after = Snapshot.take(server, upstream)
            await proc.wait()
    except TimeoutError:
        raise BenchError(
            f"phase {server.name}/{mode} took longer than --phase-timeout {args.phase_timeout}s"
        ) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.close()
    if server.child.proc.poll() is not None:
        raise BenchError(f"{server.name} died during the phase:\n{server.child.log_tail()}")
    result: dict[str, Any] = message["result"]
    events = result["events"]
    delivered = result["outcomes"].get("DELIVERED", 0)
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
        "mode": mode,
        **result,
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
    }
    print(
        f"{label} {phase['deliveries_per_s']:8.0f} deliveries/s  p50 {result['p50_ms']:6.1f} ms"
        f"  p99 {result['p99_ms']:6.1f} ms  CPU {phase['server_cpu_s_per_1k']:.3f} s/1k"
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
    """Medians over rounds per (mode, server), with ratios against the forwarder."""
    rows = []
    for mode in MODES:
        base: dict[str, Any] | None = None
        for name in servers:
            runs = [p for p in phases if p["server"] == name and p["mode"] == mode]
            if not runs:
                continue

            def median(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return statistics.median(p[key] for p in runs)

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
                "not_delivered": sum(p["not_delivered"] for p in runs),
            }
            if name == "forwarder":
                base = row
            if base is not None:
                row["throughput_vs_forwarder"] = row["deliveries_per_s"] / base["deliveries_per_s"]
                row["cpu_vs_forwarder"] = row["server_cpu_s_per_1k"] / max(
                    base["server_cpu_s_per_1k"], 1e-9
                )
            rows.append(row)
    return rows


def render_table(rows: list[dict[str, Any]], batch_size: int) -> str:
    """The summary as a Markdown table (it reads well in a terminal too)."""
    head = (
        "| call | server | deliveries/s | p50 ms | p99 ms | server CPU s / 1k deliveries "
        "| deliveries per server CPU-second | throughput vs forwarder | CPU vs forwarder "
        "| not delivered |"
    )
    lines = [head, "|" + "---|" * 10]
    for row in rows:
        call = "Deliver" if row["mode"] == "deliver" else f"DeliverBatch x{batch_size}"
        ratio = row.get("throughput_vs_forwarder")
        cpu_ratio = row.get("cpu_vs_forwarder")
        lines.append(
            f"| {call} | {LABELS[row['server']]} | {row['deliveries_per_s']:,.0f} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['server_cpu_s_per_1k']:.3f} "
            f"| {row['deliveries_per_cpu_s']:,.0f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'-' if cpu_ratio is None else f'{cpu_ratio:.2f}x'} | {row['not_delivered']} |"
        )
    return "\n".join(lines)


def render_notes(
    rows: list[dict[str, Any]], upstream: Upstream, batch_size: int, spans: dict[str, float]
) -> str:
    """Secondary numbers: spread, whether the upstream or load generator is a bottleneck."""
    lines = [
        "| call | server | deliveries/s min-max | server cores busy | upstream CPU s/1k "
        "| load generator CPU s/1k | other load on the machine (cores) |",
        "|" + "---|" * 7,
    ]
    for row in rows:
        call = "Deliver" if row["mode"] == "deliver" else f"DeliverBatch x{batch_size}"
        upstream_cpu = f"{row['upstream_cpu_s_per_1k']:.3f}"  # not measured when external
        lines.append(
            f"| {call} | {LABELS[row['server']]} "
            f"| {row['deliveries_per_s_min']:,.0f}-{row['deliveries_per_s_max']:,.0f} "
            f"| {row['server_cores']:.2f} "
            f"| {upstream_cpu if upstream.child else '-'} | {row['loadgen_cpu_s_per_1k']:.3f} "
            f"| {row['other_load_cores']:.2f} |"
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; ``--quick`` shrinks everything to a smoke run."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Sidecar vs. a bare grpc.aio->aiohttp forwarder, and the cost of tracing.",
    )
    parser.add_argument("--upstream", help="POST deliveries to this URL instead of local nginx")
    parser.add_argument(
        "--sandbox", action="store_true", help="use the sandbox as the upstream (correctness)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--deliver-calls", type=int, default=3000, help="Deliver calls per phase")
    parser.add_argument("--batches", type=int, default=200, help="DeliverBatch calls per phase")
    parser.add_argument("--batch-size", type=int, default=20, help="events per DeliverBatch")
    parser.add_argument("--concurrency", type=int, default=64, help="Deliver calls in flight")
    parser.add_argument(
        "--batch-concurrency", type=int, default=8, help="DeliverBatch calls in flight"
    )
    parser.add_argument("--warmup-calls", type=int, default=300, help="unmeasured, per phase")
    parser.add_argument("--warmup-batches", type=int, default=15, help="unmeasured, per phase")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated subset of {','.join(SERVERS)}",
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
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 small round")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.deliver_calls, args.batches = 400, 25
        args.warmup_calls, args.warmup_batches = 50, 3
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"--servers: unknown {sorted(unknown)}; choose from {list(SERVERS)}")
    args.servers = [s for s in SERVERS if s in args.servers]
    return args


def rounds_order(servers: list[str], rounds: int) -> Iterator[tuple[int, str]]:
    """Round-robin with a rotating start, so no server always goes first or last."""
    for r in range(rounds):
        shift = r % len(servers)
        for name in servers[shift:] + servers[:shift]:
            yield r + 1, name


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    """Start everything, run the phases, print and save the report, stop everything."""
    started = dt.datetime.now(dt.UTC)
    facts = machine_facts()
    print(
        f"bench: {facts['nproc']} CPUs, Python {facts['python']}, {args.rounds} round(s) of "
        f"{args.deliver_calls} Deliver (x{args.concurrency} in flight) and {args.batches} "
        f"DeliverBatch x{args.batch_size} (x{args.batch_concurrency} in flight) per server",
        flush=True,
    )
    children: list[Child] = []
    sink: grpc.aio.Server | None = None
    try:
        sink, counter, sink_port = await start_sink()
        upstream = await start_upstream(args, workdir)
        if upstream.child:
            children.append(upstream.child)
        print(f"bench: upstream {upstream.kind} at {upstream.url}", flush=True)
        servers = await start_servers(args, workdir, upstream, sink_port, children)
        phases = []
        for round_no, name in rounds_order(args.servers, args.rounds):
            for mode in MODES:
                await clear_sandbox(upstream)
                phases.append(
                    await run_phase(args, servers[name], mode, round_no, upstream, workdir)
                )
        # SIGTERM makes each sidecar flush its spans; the sink stays up until they are in.
        await asyncio.gather(*(stop_child(s.child) for s in servers.values()))
        exit_codes = {name: s.child.proc.returncode for name, s in servers.items()}
    finally:
        await asyncio.gather(*(stop_child(c) for c in children))
        if sink is not None:
            await sink.stop(0)
    rows = summarise(phases, args.servers)
    table = render_table(rows, args.batch_size)
    spans = spans_per_event(phases, counter, args.servers)
    notes = render_notes(rows, upstream, args.batch_size, spans)
    print("\n" + table + "\n\n" + notes)
    failures = sum(p["not_delivered"] for p in phases)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": facts,
        "git": git_state(),
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("out",)
        },
        "upstream": {"kind": upstream.kind, "url": upstream.url},
        "server_exit_codes": exit_codes,
        "spans_received": dict(counter.spans),
        "spans_per_event": spans,
        "summary": rows,
        "phases": phases,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nraw numbers: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if failures:
        print(f"ERROR: {failures} events were not DELIVERED; the numbers above are not valid")
        return 1
    bad_exits = {k: v for k, v in exit_codes.items() if v != 0}
    if bad_exits:
        print(f"ERROR: servers did not exit cleanly on SIGTERM: {bad_exits}")
        return 1
    return 0


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
