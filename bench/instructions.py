"""Machine instructions per event under callgrind: a figure other work on the machine cannot move.

CPU seconds per event read on a shared machine move by 10-30 % between rounds when other
sessions compete for the cores. This script runs each server under valgrind's callgrind (every
thread, C and Python alike, about 50-100 times slower), drives it with ``bench/loadgen.py``
(unmeasured, in its own process) against nginx, and reads the server's instruction count around
the measured calls only (``callgrind_control --zero`` before, ``--dump`` after). Servers:
``forwarder`` (``bench/forwarder.py``), ``sidecar`` (this work tree), ``durable`` (this work
tree with a durable queue in a fresh file, ``SIDECAR_DELIVERY_MODE=wait``) and, with ``--base
REV``, ``base`` and ``base-durable`` (the same for the sidecar of git revision REV, its
``server/`` extracted and put first on the path). With a durable server among them, every
server's events are spread over ``--customers`` customers (10000 by default), as ``make bench``
does: the queue sends one customer's events one at a time.

Instructions are not time: system calls, cache misses and the other threads' waiting are not
in them, so the ratios here are larger than the CPU-second ratios of ``make bench`` for the
same code. Use it to compare versions of the code and to see a change that CPU seconds hide
in noise; use ``make bench`` for the figures the issue's targets are stated in.

Run: ``.venv/bin/python bench/instructions.py [--servers forwarder,sidecar,durable]
[--base main] [--calls 600] [--batches 30] [--keep DIR]`` (a few minutes: the servers start
and run under valgrind). ``--keep DIR`` keeps each measured dump there as
``SERVER-MODE.callgrind``, to read per C function with ``callgrind_annotate --inclusive=yes FILE``.

Tracing: any sidecar name with ``-trace100`` (``always_on``), ``-trace10`` (parent-based
10 %) or ``-trace0`` (parent-based 0 %: every call unsampled) appended (``sidecar-trace10``,
``base-trace100``, ...) exports its spans over OTLP/gRPC to ``otlp_sink.py``, run in a process
of its own, in exports of 128 spans; callgrind counts every thread of the server, so the span
processor's export thread and the encoding are in the figure. Which tenth of the calls a 10 %
run samples is luck (each sampled batch of 20 moves the batch figure by a few percent); 0.9 x
``-trace0`` + 0.1 x ``-trace100`` is the steadier estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bluecore_devtools.localrun import free_port

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from calls import nginx  # noqa: E402 - needs the path above

PY = sys.executable
BATCH_SIZE = 20


DURABLE = frozenset({"durable", "base-durable"})
TRACING = {
    "-trace100": {"OTEL_TRACES_SAMPLER": "always_on"},
    "-trace10": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    # Every call dropped: the unsampled path alone, free of the luck of which tenth is sampled.
    "-trace0": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
    },
}


def _tracing(name: str) -> tuple[str, dict[str, str]]:
    """``name`` without its tracing suffix, and the sampler settings that suffix asks for."""
    for suffix, sampler in TRACING.items():
        if name.endswith(suffix):
            return name.removesuffix(suffix), sampler
    return name, {}


def server_command(
    name: str, port: int, upstream: str, base: Path | None, workdir: Path, sink: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one server listening on ``port``; ``sink``: the OTLP
    sink's port, for a traced one."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "BLUECORE_", "OTEL_"))
    }
    if env.get("PYTHONPATH"):
        # The servers run in a work directory of their own: a relative entry (such as
        # .cache/compiled/site, the compiled build) must still name the same directory.
        env["PYTHONPATH"] = os.pathsep.join(
            str(Path(entry).resolve()) for entry in env["PYTHONPATH"].split(os.pathsep) if entry
        )
    name, sampler = _tracing(name)
    if sampler:
        assert sink is not None
        env.update(sampler)
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink}"
        env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        # Exports of 128 spans rather than 512: the spans exported between zeroing and dumping
        # then differ from those made there by at most 128, not by most of a phase's spans.
        env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "128"
    if name == "forwarder":
        return [
            PY,
            str(BENCH / "forwarder.py"),
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream,
        ], env
    env.update(
        {
            "BLUECORE_NAMESPACE": "bench-namespace",
            "BLUECORE_API_URL": upstream,
            "SIDECAR_GRPC_ADDRESS": f"127.0.0.1:{port}",
            "SIDECAR_OPS_ADDRESS": f"127.0.0.1:{free_port()}",
            "SIDECAR_HTTP_ADDRESS": "",
            # Under valgrind one try takes far longer than it would: no timeout may cut it.
            "SIDECAR_ATTEMPT_TIMEOUT": "30s",
        }
    )
    if name.startswith("base"):
        assert base is not None
        env["PYTHONPATH"] = str(base / "server")
    if name in DURABLE:
        env["SIDECAR_QUEUE_PATH"] = str(workdir / f"{name}-{time.time_ns()}.db")
        env["SIDECAR_DELIVERY_MODE"] = "wait"
    return [PY, "-m", "bluecore_sidecar", "serve"], env


@contextlib.contextmanager
def otlp_sink(wanted: bool) -> Iterator[int | None]:
    """``otlp_sink.py`` in a process of its own (its port), when ``wanted``."""
    if not wanted:
        yield None
        return
    sink = subprocess.Popen(
        [PY, str(BENCH / "otlp_sink.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert sink.stdin is not None
    assert sink.stdout is not None
    try:
        yield int(json.loads(sink.stdout.readline())["port"])
    finally:
        sink.stdin.close()
        print(f"instructions: the OTLP sink got {sink.stdout.read().strip()}", file=sys.stderr)
        sink.wait(30)


def wait_for_port(port: int, server: subprocess.Popen[bytes], limit: float = 600) -> None:
    """Until the server accepts connections (start-up under valgrind takes a minute or more)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"instructions: the server exited with {server.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        time.sleep(1)
    raise SystemExit("instructions: the server did not listen in time")


def dumped_dump(before: set[Path], prefix: Path) -> Path:
    """The newest dump file that was not there ``before``."""
    for _ in range(60):
        new = sorted(set(prefix.parent.glob(prefix.name + "*")) - before, key=os.path.getmtime)
        if new:
            time.sleep(1)  # let callgrind finish writing it
            return new[-1]
        time.sleep(1)
    raise SystemExit("instructions: callgrind wrote no dump")


def instructions_in(dump: Path) -> int:
    """The instruction total of one callgrind dump."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"instructions: no total in {dump}")


def measure(name: str, args: argparse.Namespace, upstream: str, workdir: Path) -> dict[str, float]:
    """Instructions per event of ``name`` for Deliver and for DeliverBatch."""
    port = free_port()
    command, env = server_command(name, port, upstream, args.base_dir, workdir, args.sink)
    prefix = workdir / f"{name}.callgrind"
    log = (workdir / f"{name}.log").open("w")
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={prefix}",
            "--dump-instr=no",
            *command,
        ],
        env=env,
        stdout=log,
        stderr=log,
        cwd=workdir,
    )
    per_event: dict[str, float] = {}
    try:
        wait_for_port(port, server)
        for mode, calls, warmup, concurrency in (
            ("deliver", args.calls, 100, 64),
            ("batch", args.batches, 5, 8),
        ):
            load = subprocess.Popen(
                [
                    PY,
                    str(BENCH / "loadgen.py"),
                    "--target",
                    f"127.0.0.1:{port}",
                    "--mode",
                    mode,
                    "--calls",
                    str(calls),
                    "--warmup",
                    str(warmup),
                    "--concurrency",
                    str(concurrency),
                    "--batch-size",
                    str(BATCH_SIZE),
                    "--timeout",
                    "300",
                    "--prefix",
                    f"instr-{name}-{mode}-{time.time_ns()}",
                    "--events",
                    str(ROOT / "examples" / "events"),
                    "--customers",
                    str(args.customers),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert load.stdin is not None
            assert load.stdout is not None
            for line in load.stdout:
                if '"ready"' in line:
                    break
            else:
                raise SystemExit("instructions: the load generator ended before it was ready")
            subprocess.run(
                ["callgrind_control", "--zero", str(server.pid)], check=True, capture_output=True
            )
            load.stdin.write("go\n")
            load.stdin.flush()
            result: dict[str, object] = {}
            for line in load.stdout:
                if '"result"' in line:
                    result = json.loads(line)["result"]
            load.wait()
            outcomes = result.get("outcomes", {})
            events = calls * (BATCH_SIZE if mode == "batch" else 1)
            if outcomes != {"DELIVERED": events}:
                raise SystemExit(f"instructions: {name} {mode}: not all delivered: {outcomes}")
            before = set(workdir.glob(prefix.name + "*"))
            subprocess.run(
                ["callgrind_control", "--dump", str(server.pid)], check=True, capture_output=True
            )
            dump = dumped_dump(before, prefix)
            per_event[mode] = instructions_in(dump) / events
            if args.keep is not None:
                shutil.copy(dump, args.keep / f"{name}-{mode}.callgrind")
    finally:
        server.terminate()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return per_event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--servers",
        default="forwarder,sidecar",
        help="forwarder, sidecar, durable, base, base-durable; a sidecar's name + -trace10, "
        "-trace100 or -trace0: traced (parent-based 10 %%, always on, parent-based 0 %%), "
        "e.g. sidecar-trace10",
    )
    parser.add_argument("--base", help="git revision for the `base` server (added to --servers)")
    parser.add_argument("--calls", type=int, default=600, help="measured Deliver calls")
    parser.add_argument(
        "--batches", type=int, default=30, help=f"measured DeliverBatch calls of {BATCH_SIZE}"
    )
    parser.add_argument("--keep", type=Path, help="keep the measured dumps in this directory")
    parser.add_argument(
        "--customers",
        type=int,
        help="spread the events over N customers (default: 10000 with a durable server, else 0)",
    )
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit(
            "instructions: valgrind (callgrind) is not installed (Debian: apt-get install valgrind)"
        )
    servers = args.servers.split(",")
    if args.customers is None:
        args.customers = 10_000 if DURABLE & {_tracing(name)[0] for name in servers} else 0
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        workdir = Path(tmp)
        args.base_dir = None
        if args.base:
            based = any(_tracing(name)[0].startswith("base") for name in servers)
            servers = servers if based else [*servers, "base"]
            args.base_dir = workdir / "base"
            args.base_dir.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.base, "server"],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                ["tar", "-x", "-C", str(args.base_dir)], input=archive.stdout, check=True
            )
        with nginx(workdir) as upstream, otlp_sink(any(_tracing(n)[1] for n in servers)) as sink:
            args.sink = sink
            figures = {name: measure(name, args, upstream, workdir) for name in servers}
    print("| server | Deliver: instructions per event | DeliverBatch x20: per event |")
    print("|---|---|---|")
    reference = figures.get("forwarder")
    for name, per_event in figures.items():
        cells = []
        for mode in ("deliver", "batch"):
            cell = f"{per_event[mode] / 1000:,.0f}k"
            if reference and name != "forwarder":
                cell += f" ({per_event[mode] / reference[mode]:.2f}x the forwarder)"
            cells.append(cell)
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
