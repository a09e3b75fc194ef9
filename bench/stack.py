"""Shared parts of the webhook benchmarks: PostgreSQL, gunicorn, the load generator, CPU use.

Not a test: bench/webhook_ingest.py and bench/djstripe_peer.py import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- gunicorn --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerModel:
    worker_class: str  # "sync" | "gthread"
    workers: int
    threads: int = 1

    @property
    def label(self) -> str:
        if self.worker_class == "gthread":
            return f"gthread {self.workers}x{self.threads}"
        return f"sync x{self.workers}"

    def args(self) -> list[str]:
        out = ["--worker-class", self.worker_class, "--workers", str(self.workers)]
        if self.worker_class == "gthread":
            out += ["--threads", str(self.threads)]
        return out

    @classmethod
    def parse(cls, text: str) -> WorkerModel:
        """`sync:4` or `gthread:2x4`."""
        kind, _, size = text.partition(":")
        if kind == "sync":
            return cls("sync", int(size or 4))
        if kind == "gthread":
            workers, _, threads = (size or "2x4").partition("x")
            return cls("gthread", int(workers), int(threads or 4))
        raise ValueError(f"worker model {text!r}: use sync:N or gthread:WxT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(port: int, timeout: float = 60.0, path: str = "/") -> None:
    """Until something answers HTTP on 127.0.0.1:port (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                if sock.recv(12).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"nothing answers HTTP on port {port} after {timeout} s")


class Gunicorn:
    """One gunicorn master started by us; stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        app: str,
        model: WorkerModel,
        env: dict[str, str],
        *,
        gunicorn: Path | None = None,
        cwd: Path = ROOT,
        log_file: Path | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.model = model
        self.app = app
        command = [
            str(gunicorn or VENV_BIN / "gunicorn"),
            "--no-control-socket",  # gunicorn 27 would make ~/.gunicorn otherwise
            "--bind",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
            *model.args(),
            *extra,
            app,
        ]
        self.command = command
        self._log = open(log_file or os.devnull, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        try:
            wait_http(self.port)
            self._wait_workers()
        except BaseException:
            self.stop()
            raise

    def _wait_workers(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(children(self.proc.pid)) < self.model.workers:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn did not start {self.model.workers} workers")
            time.sleep(0.1)
        # Each worker imports the app itself (no --preload): give the last ones time to boot.
        for _ in range(self.model.workers * 2):
            wait_http(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- CPU accounting from /proc -----------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] == pid:
                out.append(int(entry.name))
    return out


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of a process and its children (gunicorn workers, PostgreSQL backends)."""
    out = {}
    for p in [pid, *children(pid)]:
        stat = _stat(p)
        if stat is not None:
            out[p] = stat[1]
    return out


class CpuMeter:
    """CPU seconds used between start() and stop() by named process trees."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.before: dict[str, dict[int, float]] = {}
        self.wall = 0.0

    def start(self) -> None:
        self.before = {name: tree_cpu(pid) for name, pid in self.roots.items()}
        self.machine_before = machine_busy_seconds()
        self.wall = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        out: dict[str, float] = {}
        for name, pid in self.roots.items():
            after = tree_cpu(pid)
            used = sum(t - self.before[name].get(p, 0.0) for p, t in after.items())
            out[name] = round(used / wall, 3)  # cores busy on average
        # Everything on the machine (us, the load generator, other people's test runs).
        out["machine"] = round((machine_busy_seconds() - self.machine_before) / wall, 3)
        out["wall_seconds"] = round(wall, 2)
        return out


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def postmaster_pid(data_dir: Path | None) -> int | None:
    if data_dir is None:
        return None
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ---- load generator ------------------------------------------------------------------------------


def run_loadgen(
    url: str,
    secret: str,
    *,
    seconds: float,
    connections: int = 0,
    rate: float = 0.0,
    warmup: float = 2.0,
    ids_out: Path | None = None,
    meter: CpuMeter | None = None,
    seed: int = 7,
) -> dict[str, Any]:
    """Run bench/loadgen.py in its own process (this project's interpreter); its JSON result."""
    command = [
        sys.executable,
        str(ROOT / "bench" / "loadgen.py"),
        "--url",
        url,
        "--secret",
        secret,
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--seed",
        str(seed),
    ]
    command += ["--connections", str(connections)] if connections else ["--rate", str(rate)]
    if ids_out is not None:
        command += ["--ids-out", str(ids_out)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    if meter is not None:
        # Measure the server over the load generator's measured window (after its warm-up and
        # its ~1 s of template building).
        time.sleep(warmup + 1.0)
        meter.start()
    out, err = proc.communicate(timeout=seconds + warmup + 600)
    cpu = meter.stop() if meter is not None else None
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{err.decode()}")
    result: dict[str, Any] = json.loads(out)
    if cpu is not None:
        result["server_cpu_cores"] = cpu
    return result


# ---- profiling -------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(master_pid: int, seconds: float, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """py-spy record (raw collapsed stacks) of a gunicorn master and its workers."""
    spy = VENV_BIN / "py-spy"
    proc = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(master_pid),
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "200",
            "--duration",
            str(int(seconds)),
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        try:
            proc.wait(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", f"{ROOT}/", "python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def hot_spots(
    raw: Path, top: int = 30
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, inclusive, self) shares from py-spy's raw output, idle samples dropped."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        # Idle: a worker waiting for a request or a gunicorn master sleeping.
        leaf = frames[-1]
        if any(w in leaf for w in ("select (", "sleep (", "wait (", "accept (")) and not any(
            "handle_request" in f or "wsgi_app" in f for f in frames
        ):
            continue
        count = int(count_text)
        total += count
        own[leaf] += count
        for name in set(frames):
            inclusive[name] += count
    if total == 0:
        return 0, [], []
    inc = [(n, c / total) for n, c in inclusive.most_common(top)]
    slf = [(n, c / total) for n, c in own.most_common(top)]
    return total, inc, slf


# ---- describing the machine ----------------------------------------------------------------------


def python_speed_ms() -> float:
    """This machine's speed at plain Python, in CPU ms for a fixed piece of work (dicts, strings,
    JSON, sorting: what the service does between statements), the best of five. Machines of
    the same description differ (seen: the same commit's figures 1.3x apart on two of them);
    this is the figure to compare before comparing two runs' CPU times."""

    def work() -> None:
        rows = [{"id": f"in_{i:06d}", "amount": i * 7 % 1000, "status": ""} for i in range(4000)]
        for row in rows:
            row["status"] = "paid" if row["amount"] % 3 else "open"
        blob = json.dumps(rows)
        again = json.loads(blob)
        again.sort(key=lambda r: (r["status"], -r["amount"], r["id"]))
        "".join(r["id"][3:] for r in again)

    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return round(best * 1000, 1)


def machine_description() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_speed_ms": str(python_speed_ms()),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def package_versions(names: Sequence[str], python: Path | None = None) -> dict[str, str]:
    code = (
        "import json,sys,importlib.metadata as m\n"
        "out={}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n]=m.version(n)\n"
        "    except m.PackageNotFoundError: out[n]='-'\n"
        "print(json.dumps(out))"
    )
    result = subprocess.run(
        [str(python or sys.executable), "-c", code, *names],
        capture_output=True,
        text=True,
        check=True,
    )
    versions: dict[str, str] = json.loads(result.stdout)
    return versions


def postgres_version(bin_dir: Path | None) -> str:
    if bin_dir is None:
        return "external"
    result = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()
