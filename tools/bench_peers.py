#!/usr/bin/env python3
"""`make bench-peers`: tidemark side by side with SQLite, Redis and etcd in one run.

Each peer runs on this machine, on the same disk, with one Python client per writer thread
(tidemark also through its C API, built from benches/peers/tidemark_peers.c). Workloads:
16-byte keys over 100 k distinct keys, 100-byte values, one write per commit:
durable put from 1, 8 and 64 writers, in-memory put (one writer), reading 200 k changes back
in order, put -> watch latency p50/p99. Every figure is the median of REPEAT runs (min and
max are printed too); the ratio table (tidemark through Python / the peer through Python) is
written to docs/benchmarks.md between the bench-peers markers.

Peers: SQLite (stdlib sqlite3, WAL, synchronous=FULL, a change table, one row per
transaction); Redis (redis-server on 127.0.0.1 and a free port in a temporary directory,
appendonly yes + appendfsync always for durable puts, no persistence for in-memory puts, a
stream read with XRANGE for the changes, keyspace notifications for the watch; a minimal
RESP client over a socket); etcd (one etcd member on 127.0.0.1, free ports, temporary data
dir; its v3 HTTP/JSON gateway: POST /v3/kv/put, /v3/kv/txn to fill, /v3/watch streamed for
the changes and the watch; base64 keys and JSON per call are this client's cost, which a
gRPC client would not pay). Servers are stopped at the end. Nothing here is a test.

    python3 tools/bench_peers.py [--quick] [--no-write]
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

import tidemark  # noqa: E402

QUICK = "--quick" in sys.argv
REPEAT = 2 if QUICK else 3
SECS = 0.5 if QUICK else 1.5  # per durable point
N_MEM = 50_000 if QUICK else 200_000
N_CHANGES = 200_000
LAT_SAMPLES = 300 if QUICK else 1000
WRITERS = (1, 8, 64)
DISTINCT = 100_000
VALUE = b"v" * 100
KEYS = [b"key-%012d" % i for i in range(DISTINCT)]
BENCH_DIR = os.environ.get("TIDEMARK_BENCH_DIR", os.path.join(ROOT, "target"))

Result = Dict[str, float]  # workload -> ops/s (latencies in seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_writers(threads: int, make_put: Callable[[int], Callable[[int], None]]) -> float:
    """Runs put(i) on `threads` threads for SECS; each thread gets its own put (client)."""
    puts = [make_put(t) for t in range(threads)]
    counts = [0] * threads
    stop = threading.Event()

    def run(t: int) -> None:
        put, i = puts[t], t * 7919
        while not stop.is_set():
            put(i)
            i += 2654435761
            counts[t] += 1

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for th in ts:
        th.start()
    time.sleep(SECS)
    stop.set()
    for th in ts:
        th.join()
    return sum(counts) / (time.perf_counter() - t0)


def percentiles(lat: List[float]) -> Tuple[float, float]:
    lat.sort()
    return lat[len(lat) // 2], lat[len(lat) * 99 // 100]


# -- tidemark ------------------------------------------------------------------------------


def tidemark_run(scratch: str) -> Result:
    r: Result = {}
    for w in WRITERS:
        d = tempfile.mkdtemp(dir=scratch)
        s = tidemark.Store(d, sync="always")
        r[f"durable_{w}"] = timed_writers(w, lambda _t: lambda i: s.put(KEYS[i % DISTINCT], VALUE))
        s.close()
    with tidemark.Store() as s:
        t0 = time.perf_counter()
        for i in range(N_MEM):
            s.put(KEYS[(i * 2654435761) % DISTINCT], VALUE)
        r["memory_put"] = N_MEM / (time.perf_counter() - t0)
    with tidemark.Store() as s:
        for i in range(0, N_CHANGES, 1000):  # filled 1000 puts per commit, read back as events
            with s.batch() as b:
                for j in range(i, i + 1000):
                    b.put(b"key-%012d" % j, VALUE)
        t0, n, frm = time.perf_counter(), 0, 1
        while True:
            page = s.changes(frm, limit=10_000)
            for ev in page.events:
                n += len(ev.value) > 0
            if not page.has_more:
                break
            frm = page.next_revision
        r["changes"] = n / (time.perf_counter() - t0)
        assert n == N_CHANGES, n
    with tidemark.Store() as s:
        r["latency_p50"], r["latency_p99"] = watch_latency(s, s)
    if shutil.which("redis-server"):
        # Two stores on one Redis log (as two processes would open it): the watcher's store
        # sees the put only through Redis (its tail), like etcd's and Redis's own watches.
        proc, port = start_redis(scratch, "--appendonly", "no")
        try:
            url = f"redis://127.0.0.1:{port}/0?store=bench"
            with tidemark.Store(url) as writer, tidemark.Store(url) as watcher:
                r["latency_shared_p50"], r["latency_shared_p99"] = watch_latency(writer, watcher)
        finally:
            proc.terminate()
            proc.wait()
    return r


def watch_latency(writer: tidemark.Store, watcher: tidemark.Store) -> Tuple[float, float]:
    """Put on `writer` -> the callback of a watch on `watcher`, one put at a time: p50, p99."""
    lat: List[float] = []
    got = threading.Event()
    sent = [0.0]

    def cb(_ev: tidemark.Event) -> None:
        lat.append(time.perf_counter() - sent[0])
        got.set()

    h = watcher.watch(prefix=b"lat/", callback=cb)
    for i in range(LAT_SAMPLES):
        got.clear()
        sent[0] = time.perf_counter()
        writer.put(b"lat/" + KEYS[i][4:], VALUE)
        got.wait(5)
    h.cancel()
    return percentiles(lat)


def tidemark_c_run(scratch: str, exe: str) -> Result:
    out = subprocess.run([exe, scratch, str(SECS)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


# -- SQLite --------------------------------------------------------------------------------

SQL_TABLE = "CREATE TABLE IF NOT EXISTS changes (rev INTEGER PRIMARY KEY AUTOINCREMENT, key BLOB NOT NULL, value BLOB NOT NULL)"


def sqlite_open(path: str, sync: str = "FULL") -> sqlite3.Connection:
    c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute(f"PRAGMA synchronous={sync}")
    c.execute(SQL_TABLE)
    return c


def sqlite_run(scratch: str) -> Result:
    r: Result = {}
    for w in WRITERS:
        d = tempfile.mkdtemp(dir=scratch)
        # One connection behind a lock: SQLite's best case for many writer threads
        # (separate connections would contend on its write lock and sleep in busy waits).
        c = sqlite_open(os.path.join(d, "db.sqlite"))
        lock = threading.Lock()

        def put(i: int) -> None:
            with lock:
                c.execute("INSERT INTO changes (key, value) VALUES (?, ?)", (KEYS[i % DISTINCT], VALUE))

        r[f"durable_{w}"] = timed_writers(w, lambda _t: put)
        c.close()
    c = sqlite3.connect(":memory:", isolation_level=None)
    c.execute(SQL_TABLE)
    t0 = time.perf_counter()
    for i in range(N_MEM):
        c.execute("INSERT INTO changes (key, value) VALUES (?, ?)", (KEYS[(i * 2654435761) % DISTINCT], VALUE))
    r["memory_put"] = N_MEM / (time.perf_counter() - t0)
    c.execute("DELETE FROM changes")
    c.execute("BEGIN")
    c.executemany("INSERT INTO changes (key, value) VALUES (?, ?)", ((b"key-%012d" % i, VALUE) for i in range(N_CHANGES)))
    c.execute("COMMIT")
    t0, n, frm = time.perf_counter(), 0, 0
    while True:
        rows = c.execute("SELECT rev, key, value FROM changes WHERE rev > ? ORDER BY rev LIMIT 10000", (frm,)).fetchall()
        if not rows:
            break
        for row in rows:
            n += len(row[2]) > 0
        frm = rows[-1][0]
    r["changes"] = n / (time.perf_counter() - t0)
    c.close()
    return r  # no watch: SQLite has no change notification across connections


# -- Redis ---------------------------------------------------------------------------------


class Resp:
    """A minimal RESP2 client: one command, one reply (no pipelining, like one put per commit)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def send(self, *args: bytes) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(parts))

    def reply(self) -> object:
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"bad RESP reply {line!r}")

    def call(self, *args: bytes) -> object:
        self.send(*args)
        return self.reply()

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def start_redis(scratch: str, *extra: str) -> Tuple[subprocess.Popen, int]:
    """A redis-server on 127.0.0.1, a free port and a directory under `scratch`."""
    d, port = tempfile.mkdtemp(dir=scratch), free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "redis-server")
    return proc, port


def redis_run(scratch: str) -> Result:
    proc, port = start_redis(scratch, "--appendonly", "yes", "--appendfsync", "always", "--notify-keyspace-events", "K$")
    try:
        admin = Resp(port)
        while admin.call(b"INFO", b"persistence").find(b"aof_rewrite_in_progress:0") < 0:
            time.sleep(0.05)
        r: Result = {}
        for w in WRITERS:
            clients = [Resp(port) for _ in range(w)]
            r[f"durable_{w}"] = timed_writers(w, lambda t: lambda i, c=clients[t]: c.call(b"SET", KEYS[i % DISTINCT], VALUE))
            for c in clients:
                c.close()
        admin.call(b"CONFIG", b"SET", b"appendonly", b"no")
        admin.call(b"FLUSHALL")
        t0 = time.perf_counter()
        for i in range(N_MEM):
            admin.call(b"SET", KEYS[(i * 2654435761) % DISTINCT], VALUE)
        r["memory_put"] = N_MEM / (time.perf_counter() - t0)
        # The change feed: a stream of 200 k entries (filled pipelined), read with XRANGE.
        for i in range(0, N_CHANGES, 1000):
            for j in range(i, i + 1000):
                admin.send(b"XADD", b"feed", b"*", b"k", b"key-%012d" % j, b"v", VALUE)
            for _ in range(1000):
                admin.reply()
        t0, n, frm = time.perf_counter(), 0, b"-"
        while True:
            page = admin.call(b"XRANGE", b"feed", frm, b"+", b"COUNT", b"10000")
            if not page:
                break
            for _id, fields in page:
                n += len(fields[3]) > 0
            last = page[-1][0].split(b"-")
            frm = b"%s-%d" % (last[0], int(last[1]) + 1)
        r["changes"] = n / (time.perf_counter() - t0)
        assert n == N_CHANGES, n
        # put -> keyspace notification on a subscribed connection.
        sub = Resp(port)
        sub.call(b"PSUBSCRIBE", b"__keyspace@0__:lat/*")
        lat: List[float] = []
        for i in range(LAT_SAMPLES):
            t0 = time.perf_counter()
            admin.call(b"SET", b"lat/" + KEYS[i][4:], VALUE)
            sub.reply()
            lat.append(time.perf_counter() - t0)
        r["latency_p50"], r["latency_p99"] = percentiles(lat)
        r["latency_shared_p50"], r["latency_shared_p99"] = r["latency_p50"], r["latency_p99"]  # always through the server
        sub.close()
        admin.close()
        return r
    finally:
        proc.terminate()
        proc.wait()


# -- etcd ----------------------------------------------------------------------------------


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


class Etcd:
    """etcd's v3 HTTP/JSON gateway over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def post(self, path: str, body: dict) -> dict:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"etcd {path}: {resp.status} {data[:200]!r}")
        return json.loads(data)

    def put(self, key: bytes, value: bytes) -> dict:
        return self.post("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def watch(self, key: bytes, range_end: Optional[bytes] = None, start: int = 0) -> http.client.HTTPResponse:
        """A streamed watch on its own connection: one JSON object per line."""
        req: dict = {"key": b64(key)}
        if range_end is not None:
            req["range_end"] = b64(range_end)
        if start:
            req["start_revision"] = start
        c = http.client.HTTPConnection("127.0.0.1", self.port)
        c.request("POST", "/v3/watch", json.dumps({"create_request": req}))
        resp = c.getresponse()
        json.loads(resp.readline())  # the "created" message
        return resp


def etcd_run(scratch: str) -> Result:
    d, cport, pport = tempfile.mkdtemp(dir=scratch), free_port(), free_port()
    curl, purl = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    args = ["etcd", "--name", "bench", "--data-dir", d, "--listen-client-urls", curl,
            "--advertise-client-urls", curl, "--listen-peer-urls", purl,
            "--initial-advertise-peer-urls", purl, "--initial-cluster", f"bench={purl}",
            "--quota-backend-bytes", str(8 << 30), "--log-level", "error"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(cport, proc, "etcd")
        admin = Etcd(cport)
        for _ in range(100):
            try:
                admin.put(b"ready", b"1")
                break
            except (RuntimeError, OSError):
                time.sleep(0.1)
                admin = Etcd(cport)
        r: Result = {}
        for w in WRITERS:
            clients = [Etcd(cport) for _ in range(w)]
            r[f"durable_{w}"] = timed_writers(w, lambda t: lambda i, c=clients[t]: c.put(KEYS[i % DISTINCT], VALUE))
        # No in-memory mode: etcd always syncs its log. The change feed: 200 k puts (filled
        # 128 per transaction), read back by a watch from the first of them.
        first = int(admin.put(b"feed-start", b"")["header"]["revision"]) + 1
        for i in range(0, N_CHANGES, 128):
            ops = [{"request_put": {"key": b64(b"feed/%012d" % j), "value": b64(VALUE)}} for j in range(i, min(i + 128, N_CHANGES))]
            admin.post("/v3/kv/txn", {"success": ops})
        t0, n = time.perf_counter(), 0
        w = admin.watch(b"feed/", b"feed0", start=first)
        while n < N_CHANGES:
            msg = json.loads(w.readline())
            for ev in msg["result"].get("events", ()):
                n += len(base64.b64decode(ev["kv"]["value"])) > 0
        r["changes"] = n / (time.perf_counter() - t0)
        w.close()
        lat: List[float] = []
        w = admin.watch(b"lat/", b"lat0")
        for i in range(LAT_SAMPLES):
            t0 = time.perf_counter()
            admin.put(b"lat/" + KEYS[i][4:], VALUE)
            while not json.loads(w.readline())["result"].get("events"):
                pass
            lat.append(time.perf_counter() - t0)
        w.close()
        r["latency_p50"], r["latency_p99"] = percentiles(lat)
        r["latency_shared_p50"], r["latency_shared_p99"] = r["latency_p50"], r["latency_p99"]  # always through the server
        return r
    finally:
        proc.terminate()
        proc.wait()


# -- the table -----------------------------------------------------------------------------

ROWS = [
    ("durable_1", "durable put, 1 writer (puts/s)"),
    ("durable_8", "durable put, 8 writers (puts/s)"),
    ("durable_64", "durable put, 64 writers (puts/s)"),
    ("memory_put", "in-memory put, 1 writer (puts/s)"),
    ("changes", f"read {N_CHANGES // 1000} k changes in order (events/s)"),
    ("latency_p50", "put -> watch latency p50"),
    ("latency_p99", "put -> watch latency p99"),
    ("latency_shared_p50", "put -> watch through a server p50 (tidemark: two stores on one Redis log)"),
    ("latency_shared_p99", "put -> watch through a server p99 (tidemark: two stores on one Redis log)"),
]


def fmt(key: str, v: float) -> str:
    if key.startswith("latency"):
        return f"{v * 1e6:.0f} µs" if v < 0.01 else f"{v * 1e3:.1f} ms"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def summary(runs: List[Result], key: str) -> Optional[Tuple[float, float, float]]:
    vals = [r[key] for r in runs if key in r]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def cell(runs: List[Result], key: str) -> str:
    s = summary(runs, key)
    if s is None:
        return "–"
    med, lo, hi = s
    return f"{fmt(key, med)} ({fmt(key, lo)}–{fmt(key, hi)})"


def ratio(ours: List[Result], theirs: List[Result], key: str) -> str:
    a, b = summary(ours, key), summary(theirs, key)
    if a is None or b is None:
        return "–"
    return f"**{a[0] / b[0]:.2f}×**" if key.startswith("latency") else f"**{a[0] / b[0]:.1f}×**"


def fsync_latency(d: str, n: int = 300) -> float:
    fd, p = tempfile.mkstemp(dir=d)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        os.write(fd, b"x" * 140)
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t0)
    os.close(fd)
    os.unlink(p)
    return statistics.median(lat)


def main() -> None:
    os.makedirs(BENCH_DIR, exist_ok=True)
    exe = os.environ.get("TIDEMARK_PEERS_C", os.path.join(ROOT, "target", "bench-peers", "tidemark_peers"))
    peers: Dict[str, Tuple[Callable[[str], Result], Optional[str]]] = {
        "SQLite": (sqlite_run, None),
        "Redis": (redis_run, None if shutil.which("redis-server") else "redis-server is not installed"),
        "etcd": (etcd_run, None if shutil.which("etcd") else "etcd is not installed"),
    }
    results: Dict[str, List[Result]] = {"tidemark (Python)": [], "tidemark (C)": [], **{p: [] for p in peers}}
    failed: Dict[str, str] = {p: why for p, (_f, why) in peers.items() if why}
    loads, syncs = [os.getloadavg()[0]], []
    for rep in range(REPEAT):
        with tempfile.TemporaryDirectory(dir=BENCH_DIR, prefix="bench-peers-") as scratch:
            syncs.append(fsync_latency(scratch))
            print(f"run {rep + 1}/{REPEAT}: fdatasync {syncs[-1] * 1e6:.0f} µs, load {os.getloadavg()[0]:.2f}", flush=True)
            results["tidemark (Python)"].append(tidemark_run(scratch))
            if os.path.exists(exe):
                results["tidemark (C)"].append(tidemark_c_run(scratch, exe))
            for name, (fn, _why) in peers.items():
                if name in failed:
                    continue
                try:
                    results[name].append(fn(scratch))
                except Exception as e:  # a peer that cannot run is reported, not fatal
                    failed[name] = f"{type(e).__name__}: {e}"
            for name, runs in results.items():
                if runs:
                    print(f"  {name}: " + ", ".join(f"{k} {fmt(k, v)}" for k, v in runs[-1].items()), flush=True)
        loads.append(os.getloadavg()[0])
    table = render(results, failed, syncs, loads)
    print()
    print(table)
    if "--no-write" not in sys.argv:
        write_doc(table)


def render(results: Dict[str, List[Result]], failed: Dict[str, str], syncs: List[float], loads: List[float]) -> str:
    py, peers = results["tidemark (Python)"], [p for p in results if not p.startswith("tidemark")]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ["workload", "tidemark (Python)", "tidemark (C)"]
    for p in peers:
        head += [p, f"tidemark / {p}"]
    lines = [
        f"Run {date}{' (quick)' if QUICK else ''}: {platform.node() or 'this machine'}, {os.cpu_count()} cores (shared with other "
        f"sessions' builds), load average {min(loads):.1f}–{max(loads):.1f}, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; disk under `{os.path.relpath(BENCH_DIR, ROOT) if BENCH_DIR.startswith(ROOT) else BENCH_DIR}` with "
        f"append + fdatasync {min(syncs) * 1e6:.0f}–{max(syncs) * 1e6:.0f} µs. Median of {REPEAT} runs (min–max). "
        "Ratios compare tidemark through Python with the peer through Python (above 1 = tidemark faster; for "
        "latencies below 1 = tidemark faster).",
        "",
        "| " + " | ".join(head) + " |",
        "|---" + "|---:" * (len(head) - 1) + "|",
    ]
    for key, label in ROWS:
        row = [label, cell(py, key), cell(results["tidemark (C)"], key)]
        for p in peers:
            if p in failed and not results[p]:
                row += ["not run", "–"]
            else:
                row += [cell(results[p], key), ratio(py, results[p], key)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for p, why in failed.items():
        lines.append(f"- {p} could not run: {why}.")
    lines.append("- SQLite: no in-process change notification across connections, so no watch row; "
                 "its writer threads share one connection behind a lock (its best case).")
    lines.append("- Redis: durable = `appendonly yes`, `appendfsync always`; in-memory = no persistence; "
                 "changes = a stream read with `XRANGE … COUNT 10000`; watch = keyspace notifications.")
    lines.append("- put -> watch through a server: tidemark's writer and watcher are two stores opened on one "
                 "Redis log (no persistence), so the event reaches the watcher only through Redis, as it "
                 "would reach another process; Redis's and etcd's watches always go through their server, so "
                 "their figures are the row above.")
    lines.append("- etcd: has no in-memory mode; its client is the v3 HTTP/JSON gateway from Python "
                 "(JSON + base64 per call, a cost a Go gRPC client would not pay); changes = a watch "
                 "from the first revision.")
    return "\n".join(lines)


BEGIN, END = "<!-- bench-peers:begin -->", "<!-- bench-peers:end -->"


def write_doc(table: str) -> None:
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n## Peers side by side (`make bench-peers`)\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
    print(f"wrote the table to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
