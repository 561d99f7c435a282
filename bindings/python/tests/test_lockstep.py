"""lockstep over HTTP from Python: Store.serve / Store.follow (docs/lockstep.md).

Everything listens on 127.0.0.1 with a free port. No timed assertions: waits are bounded by
PATIENCE only so that a broken build fails instead of hanging."""

from __future__ import annotations

import gc
import http.client
import http.server
import json
import socket
import sys
import threading
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import tidemark
from tidemark import FollowEvent, FollowEventKind, Follower, Server, Store
from tidemark import lockstep as ls

from conftest import PATIENCE, wait_until

CURSOR_PREFIX = b"\0l/"

# Fast retries so that tests which provoke errors do not wait long.
FAST = dict(backoff_initial_ms=20, backoff_max_ms=200, poll_ms=50, connect_timeout_ms=1000)


@pytest.fixture(autouse=True)
def _no_running_followers() -> Iterator[None]:
    """Every follower a test started was stopped (its drop function ran: the registry entry is
    removed exactly then) by the end of the test, and every server too."""
    yield
    gc.collect()
    wait_until(lambda: not ls._registry, "every follower to be stopped and dropped")
    assert not list(ls._live)


def get(url: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any, bytes]:
    """(status, headers, body) of a GET, errors included."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=PATIENCE) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def request(method: str, url: str, body: Optional[bytes] = None) -> Tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=PATIENCE) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def records(body: bytes) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def mirrored(store: Store, prefix: str) -> Dict[str, Dict[str, Any]]:
    """The mirror's records under prefix, by id, without the protocol fields."""
    out = {}
    for ev in store.range(prefix=prefix):
        rec = json.loads(ev.value)
        out[ev.key_str[len(prefix):]] = {k: v for k, v in rec.items() if k not in ("id", "updated_at", "deleted_at")}
    return out


def source_view(store: Store, prefix: str) -> Dict[str, Dict[str, Any]]:
    return {ev.key_str[len(prefix):]: json.loads(ev.value) for ev in store.range(prefix=prefix)}


class Recorder:
    """A follower callback that records every event (thread-safe enough: one writer)."""

    def __init__(self) -> None:
        self.events: List[FollowEvent] = []

    def __call__(self, ev: FollowEvent) -> None:
        self.events.append(ev)

    def kinds(self) -> List[str]:
        return [str(e.kind) for e in list(self.events)]

    def of(self, kind: str) -> List[FollowEvent]:
        return [e for e in list(self.events) if e.kind == kind]


@pytest.fixture
def source() -> Iterator[Store]:
    s = Store()
    s.put("/servers/1", json.dumps({"ip": "10.0.0.1", "port": 1234}))
    s.put("/servers/2", json.dumps({"ip": "10.0.0.2", "port": 1234}))
    s.put("/other/x", json.dumps({"not": "served under /servers/"}))
    s.put("/servers/3", "not json at all")
    s.delete("/servers/2")
    try:
        yield s
    finally:
        s.close()


# =============================================================================================
# The server


def test_serve_reports_where_it_listens(source: Store) -> None:
    with source.serve() as server:
        assert isinstance(server, Server)
        assert server.running
        host, port = server.addr.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) == server.port > 0
        assert server.url("/servers/0") == f"http://127.0.0.1:{server.port}/servers/0"
        assert server.url("servers/", since=3, follow=True) == f"http://{server.addr}/servers/?since=3&follow=true"
        assert server.store is source
        assert repr(server).startswith("<tidemark.Server http://127.0.0.1:")
        st = server.status()
        assert st["addr"] == server.addr
        assert st["writable"] is False and st["auth"] is False and st["heartbeat_ms"] == 10000
        for k in ("connections", "following", "requests", "records_served", "refused_connections"):
            assert isinstance(st[k], int)
    assert not server.running
    with pytest.raises(tidemark.ClosedError):
        server.status()


def test_finite_since_zero_skips_deleted_records(source: Store) -> None:
    with source.serve() as server:
        status, headers, body = get(server.url("/servers/0"))
        assert status == 200
        assert headers["Content-Type"].startswith("application/x-ndjson")
        assert int(headers["X-Tidemark-Revision"]) == source.revision
        recs = records(body)
        assert [r["id"] for r in recs] == ["1", "3"]
        assert recs[0] == {"id": "1", "updated_at": 1, "deleted_at": None, "ip": "10.0.0.1", "port": 1234}
        assert recs[1] == {"id": "3", "updated_at": 4, "deleted_at": None, "value": "not json at all"}
        # the other forms of the same request
        assert records(get(server.url("/servers/", since=0))[2]) == recs
        assert records(get(server.url("/servers/"))[2]) == recs
        assert server.status()["requests"] >= 3
        assert server.status()["records_served"] >= 6


def test_finite_since_n_sends_tombstones_once(source: Store) -> None:
    with source.serve() as server:
        recs = records(get(server.url("/servers/2"))[2])
        # updated_at >= 2: /servers/2 (deleted at 5, a tombstone) and /servers/3 (4), sorted
        assert recs == [
            {"id": "3", "updated_at": 4, "deleted_at": None, "value": "not json at all"},
            {"id": "2", "updated_at": 5, "deleted_at": 5},
        ]
        assert records(get(server.url("/servers/", since=5))[2]) == [{"id": "2", "updated_at": 5, "deleted_at": 5}]
        # a client at the current revision gets that record again, nothing after it
        assert records(get(server.url(f"/servers/{source.revision + 1}"))[2]) == []


def test_410_after_compaction_and_400_for_a_bad_since(source: Store) -> None:
    source.put("/servers/4", "{}")
    source.compact(source.revision)
    with source.serve() as server:
        status, headers, body = get(server.url("/servers/1"))
        assert status == 410
        err = json.loads(body)
        assert err["earliest_revision"] == source.earliest_revision
        assert err["current_revision"] == source.revision
        # since 0 still works: the records survive compaction
        assert [r["id"] for r in records(get(server.url("/servers/0"))[2])] == ["1", "3", "4"]
        for bad in ("/servers/abc", "/servers/?since=-1", "/servers/?since=1x"):
            status, _, body = get(server.url(bad))
            assert status == 400, bad
            assert json.loads(body)["status"] == 400


def test_token_is_required_when_set(source: Store) -> None:
    with source.serve(token="s3cret") as server:
        assert server.status()["auth"] is True
        status, headers, body = get(server.url("/servers/0"))
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(body)["status"] == 401
        assert get(server.url("/servers/0"), {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = get(server.url("/servers/0"), {"Authorization": "Bearer s3cret"})
        assert status == 200 and len(records(body)) == 2


def test_writable_server_puts_and_deletes(store: Store) -> None:
    with store.serve(writable=True) as server:
        status, body = request("PUT", server.url("/servers/9"), b'{"ip":"10.0.0.9"}')
        assert status == 200
        rec = json.loads(body)
        assert rec["id"] == "9" and rec["deleted_at"] is None and rec["updated_at"] == store.revision
        assert json.loads(store.get("/servers/9").value) == {"ip": "10.0.0.9"}  # type: ignore[union-attr]
        assert request("PUT", server.url("/servers/10"), b"not json")[0] == 400
        status, body = request("DELETE", server.url("/servers/9"))
        assert status == 200 and json.loads(body)["deleted_at"] == store.revision
        assert store.get("/servers/9") is None
        assert request("DELETE", server.url("/servers/9"))[0] == 404
    with store.serve() as readonly:
        assert request("PUT", readonly.url("/servers/9"), b"{}")[0] == 405
        assert store.get("/servers/9") is None


def read_json_line(resp: http.client.HTTPResponse) -> Optional[Dict[str, Any]]:
    """The next non-blank line of a chunked follow response (None at its end)."""
    while True:
        line = resp.readline()
        if not line:
            return None
        if line.strip():
            return json.loads(line)  # type: ignore[no-any-return]


def test_follow_mode_streams_catch_up_live_changes_and_heartbeats(source: Store) -> None:
    server = source.serve(heartbeat_ms=50)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE)
    try:
        conn.request("GET", "/servers/0?follow=true")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert [read_json_line(resp)["id"], read_json_line(resp)["id"]] == ["1", "3"]  # type: ignore[index]
        wait_until(lambda: server.status()["following"] == 1, "the server to count the follow response")
        rev = source.put("/servers/5", json.dumps({"ip": "10.0.0.5"}))
        source.put("/other/y", "{}")  # not under the prefix: not sent
        drev = source.delete("/servers/1")
        live = []
        while len(live) < 2:
            rec = read_json_line(resp)
            assert rec is not None
            if rec.get("heartbeat"):
                continue
            live.append(rec)
        assert live == [
            {"id": "5", "updated_at": rev, "deleted_at": None, "ip": "10.0.0.5"},
            {"id": "1", "updated_at": drev, "deleted_at": drev},
        ]
        # silence: heartbeats
        assert read_json_line(resp) == {"heartbeat": True}
        # stopping the server ends the response cleanly (final chunk)
        server.stop()
        while True:
            rec = read_json_line(resp)
            if rec is None:
                break
            assert rec == {"heartbeat": True}
        assert resp.isclosed() or resp.read() == b""
    finally:
        conn.close()
        server.stop()


def test_follow_response_ends_when_the_store_is_closed() -> None:
    s = Store()
    s.put("/a/1", "{}")
    server = s.serve()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE)
    try:
        conn.request("GET", "/a/0?follow=true")
        resp = conn.getresponse()
        assert read_json_line(resp)["id"] == "1"  # type: ignore[index]
        s.close()  # stops the server first: the response ends
        assert not server.running
        assert read_json_line(resp) is None
    finally:
        conn.close()
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE).close()


def test_stop_is_idempotent_and_thread_safe(store: Store) -> None:
    server = store.serve()
    threads = [threading.Thread(target=server.stop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert not server.running
    server.stop()
    with server:
        pass
    assert "stopped" in repr(server)


def test_a_dropped_server_stops(store: Store) -> None:
    server = store.serve()
    port = server.port
    ref = weakref.ref(server)
    del server
    gc.collect()
    assert ref() is None
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", port), timeout=PATIENCE).close()


def test_bad_server_arguments(store: Store) -> None:
    with pytest.raises(tidemark.InvalidArgumentError, match="bogus"):
        store.serve(bogus=True)
    with pytest.raises(tidemark.InvalidArgumentError):
        store.serve(heartbeat_ms=0)
    with pytest.raises(tidemark.InvalidArgumentError):
        store.serve(writable="yes")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.serve("not an address")
    with pytest.raises(tidemark.InvalidArgumentError, match="allow_remote"):
        store.serve("0.0.0.0:0")
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        store.serve("127.0.0.1:70000")
    with pytest.raises(TypeError):
        store.serve(token=object())
    with pytest.raises(TypeError):
        store.serve(12345)  # type: ignore[arg-type]
    with pytest.raises(tidemark.InvalidArgumentError, match="tls_key"):
        store.serve(tls_cert="cert.pem")  # the key goes with it
    with pytest.raises(tidemark.InvalidArgumentError):
        store.serve(max_follows=0)
    with store.serve(("127.0.0.1", 0), token=None, max_follows=5, threads=1) as server:  # None = the default
        assert server.status()["auth"] is False
        assert server.status()["tls"] is False
        with pytest.raises(tidemark.TidemarkIOError):  # an OSError too
            store.serve(server.addr)


def test_serve_on_a_closed_store() -> None:
    s = Store()
    s.close()
    with pytest.raises(tidemark.ClosedError):
        s.serve()
    with pytest.raises(tidemark.ClosedError):
        s.follow("http://127.0.0.1:1/a/")


# =============================================================================================
# The follower


def test_follower_mirrors_puts_updates_and_deletes(source: Store) -> None:
    rec = Recorder()
    with source.serve() as server, Store() as mirror:
        follower = mirror.follow(server.url("/servers/"), callback=rec, prefix="/mirror/")
        assert isinstance(follower, Follower) and follower.running
        assert follower.store is mirror and follower.url == server.url("/servers/")
        follower.wait_for_cursor(4, timeout=PATIENCE)  # the last change under /servers/ so far
        assert mirrored(mirror, "/mirror/") == {"1": {"ip": "10.0.0.1", "port": 1234}, "3": {"value": "not json at all"}}
        # the record is stored as the JSON line received
        line = mirror.get("/mirror/1").value  # type: ignore[union-attr]
        assert json.loads(line) == {"id": "1", "updated_at": 1, "deleted_at": None, "ip": "10.0.0.1", "port": 1234}

        # live: a put, an update, a delete, an atomic batch, and a write outside the prefix
        source.put("/servers/4", json.dumps({"ip": "10.0.0.4"}))
        source.put("/servers/1", json.dumps({"ip": "10.0.0.100", "port": 1}))
        source.delete("/servers/3")
        with source.batch() as b:
            b.put("/servers/5", json.dumps({"n": 5})).put("/servers/6", json.dumps({"n": 6})).delete("/servers/4")
        last = source.put("/servers/7", "{}")
        source.put("/other/z", "{}")
        st = follower.wait_for_cursor(last, timeout=PATIENCE)
        assert mirrored(mirror, "/mirror/") == source_view(source, "/servers/") == {
            "1": {"ip": "10.0.0.100", "port": 1},
            "5": {"n": 5},
            "6": {"n": 6},
            "7": {},
        }
        # the cursor is committed next to the records, in the reserved namespace
        with pytest.raises(tidemark.InvalidArgumentError, match="reserved"):
            mirror.get(CURSOR_PREFIX + b"/mirror/")
        assert st["cursor"] == last and st["prefix"] == "/mirror/" and st["url"] == server.url("/servers/")
        assert st["state"] in ("streaming", "connecting", "polling")
        assert st["records"] >= 9 and st["writes"] >= 7 and st["batches"] >= 1  # (4 may coalesce)
        assert st["malformed_lines"] == 0 and st["resyncing"] is False
        assert st["local_revision"] <= mirror.revision
        follower.stop()
        assert not follower.running
        with pytest.raises(tidemark.ClosedError):
            follower.status()

    kinds = rec.kinds()
    assert kinds[0] == "resync_started"  # the first sync is a full one
    assert "connected" in kinds and "resync_done" in kinds and "applied" in kinds
    applied = rec.of("applied")
    assert all(isinstance(e.kind, FollowEventKind) for e in rec.events)
    assert all(e.records >= 1 and e.writes <= e.records and isinstance(e.cursor, int) for e in applied)
    assert applied[-1].cursor == last
    assert sum(e.records for e in applied) == st["records"]
    assert rec.of("connected")[0].message.startswith("/servers/")
    assert rec.of("resync_started")[0].message
    assert rec.of("resync_done")[0].records == 0
    assert follower.events_received == len(rec.events)


def test_follower_default_prefix_is_the_url_path(source: Store) -> None:
    with source.serve() as server, Store() as mirror:
        with mirror.follow(server.url("/servers/"), **FAST) as follower:
            follower.wait_for_cursor(4, timeout=PATIENCE)
            assert sorted(e.key_str for e in mirror.range(prefix="/servers/")) == ["/servers/1", "/servers/3"]
        assert not follower.running


def test_follower_without_follow_polls(source: Store) -> None:
    with source.serve() as server, Store() as mirror:
        with mirror.follow(server.url("/servers/"), follow=False, **FAST) as follower:
            follower.wait_for_cursor(4, timeout=PATIENCE)
            rev = source.put("/servers/8", "{}")
            follower.wait_for_cursor(rev, timeout=PATIENCE)
            assert mirror.get("/servers/8") is not None
            assert follower.status()["connections"] >= 2


def test_follower_reports_connection_errors_and_keeps_trying(store: Store) -> None:
    # a port nothing listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rec = Recorder()
    with store.follow(f"http://127.0.0.1:{port}/a/", callback=rec, **FAST) as follower:
        st = follower.wait_for(lambda s: s["errors"] >= 2, timeout=PATIENCE)
        assert st["last_error"] and st["connected"] is False
        errors = rec.of("error")
        assert len(errors) >= 2 and all(e.message and e.retry_ms > 0 for e in errors)
        # once a server appears there, the follower catches up
        s = Store()
        s.put("/a/1", '{"late":true}')
        try:
            server = s.serve(("127.0.0.1", port))
        except tidemark.TidemarkIOError:  # pragma: no cover - the port was taken meanwhile
            s.close()
            return
        with s, server:
            follower.wait_for_cursor(1, timeout=PATIENCE)
            assert json.loads(store.get("/a/1").value)["late"] is True  # type: ignore[union-attr]


class _Feed(http.server.BaseHTTPRequestHandler):
    """A foreign lockstep server: a finite response with a malformed line among records."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802
        body = type(self).body
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the follower was stopped mid-response
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def feed() -> Iterator[http.server.ThreadingHTTPServer]:
    class Handler(_Feed):
        body = (
            b'{"id":"a","updated_at":"2024-01-01T00:00:00Z","v":1}\n'
            b"this is not json\n"
            b'{"heartbeat":true}\n'
            b"\n"
            b'{"no_id":1,"updated_at":"2024-01-01T00:00:01Z"}\r\n'
            b'{"id":"b","updated_at":"2024-01-01T00:00:02Z","v":2}\n'
        )

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(PATIENCE)


def test_malformed_lines_are_reported_and_skipped(store: Store, feed: http.server.ThreadingHTTPServer) -> None:
    rec = Recorder()
    port = feed.server_address[1]
    with store.follow(f"http://127.0.0.1:{port}/things/", callback=rec, follow=False, **FAST) as follower:
        st = follower.wait_for_cursor("2024-01-01T00:00:02Z", timeout=PATIENCE)
        assert st["malformed_lines"] >= 2 and st["last_malformed"]
        wait_until(lambda: len(rec.of("malformed")) >= 2, "the malformed events")
    assert sorted(e.key_str for e in store.range(prefix="/things/")) == ["/things/a", "/things/b"]
    bad = rec.of("malformed")
    assert bad[0].line == b"this is not json" and bad[0].message
    assert bad[1].line.startswith(b'{"no_id":1') and "id" in bad[1].message
    assert all(isinstance(e.line, bytes) for e in bad)
    assert rec.of("applied")[-1].cursor == "2024-01-01T00:00:02Z"


def test_resync_after_410_removes_what_the_server_no_longer_has(tmp_path: Path) -> None:
    source = Store()
    for i in range(1, 6):
        source.put(f"/r/{i}", json.dumps({"i": i}))
    mirror = Store(tmp_path / "mirror")
    try:
        with source.serve() as server:
            with mirror.follow(server.url("/r/"), **FAST) as follower:
                follower.wait_for_cursor(5, timeout=PATIENCE)
            # while nobody follows: deletes, then compaction past the follower's cursor
            source.delete("/r/1")
            source.delete("/r/2")
            last = source.put("/r/6", "{}")
            source.compact(source.revision)

            rec = Recorder()
            with mirror.follow(server.url("/r/"), callback=rec, **FAST) as follower:
                follower.wait_for(lambda s: s["resyncs"] >= 1 and not s["resyncing"] and s["cursor"] == last,
                                  timeout=PATIENCE)
                wait_until(lambda: rec.of("resync_done"), "the resync_done event")
            assert rec.kinds()[0] == "connected" or rec.kinds()[0] == "resync_started"
            started = rec.of("resync_started")
            assert started and "410" in started[0].message
            assert rec.of("resync_done")[0].records == 2  # /r/1 and /r/2 were deleted locally
            assert sorted(e.key_str for e in mirror.range(prefix="/r/")) == ["/r/3", "/r/4", "/r/5", "/r/6"]
    finally:
        mirror.close()
        source.close()


def test_a_durable_follower_resumes_from_its_cursor(tmp_path: Path) -> None:
    with Store() as source, source.serve() as server:
        source.put("/d/1", "{}")
        with Store(tmp_path / "m") as mirror, mirror.follow(server.url("/d/"), **FAST) as f:
            f.wait_for_cursor(1, timeout=PATIENCE)
        rev = source.put("/d/2", "{}")
        rec = Recorder()
        with Store(tmp_path / "m") as mirror:
            with mirror.follow(server.url("/d/"), callback=rec, **FAST) as f:
                st = f.wait_for_cursor(rev, timeout=PATIENCE)
                assert st["resyncs"] == 0
            assert sorted(e.key_str for e in mirror.range(prefix="/d/")) == ["/d/1", "/d/2"]
        assert "resync_started" not in rec.kinds()  # it asked from its cursor
        assert rec.of("connected")[0].message.startswith("/d/1")  # from the cursor, inclusive


def test_callback_that_raises_is_reported_and_the_follower_continues(source: Store) -> None:
    hooked: List[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = hooked.append

    def cb(ev: FollowEvent) -> None:
        raise RuntimeError(f"callback failed on {ev.kind}")

    try:
        with source.serve() as server, Store() as mirror:
            with mirror.follow(server.url("/servers/"), callback=cb) as follower:
                follower.wait_for_cursor(4, timeout=PATIENCE)
                rev = source.put("/servers/9", "{}")
                follower.wait_for_cursor(rev, timeout=PATIENCE)
                assert mirror.get("/servers/9") is not None
                wait_until(lambda: follower.exception_count == follower.events_received, "every exception")
    finally:
        sys.unraisablehook = old
    assert follower.exception_count >= 3
    assert all(isinstance(e, RuntimeError) for e in follower.exceptions)
    assert hooked and hooked[0].exc_type is RuntimeError
    assert "tidemark follower callback" in hooked[0].err_msg and hooked[0].object is cb


def test_stop_from_inside_the_callback(source: Store) -> None:
    holder: Dict[str, Any] = {}
    calls: List[str] = []

    def cb(ev: FollowEvent) -> None:
        calls.append(str(ev.kind))
        if ev.kind == "applied":
            holder["f"].stop()  # returns at once; no call after this one
            holder["stopped"] = len(calls)

    with source.serve() as server, Store() as mirror:
        holder["f"] = mirror.follow(server.url("/servers/"), callback=cb)
        wait_until(lambda: "stopped" in holder, "the callback to stop its follower")
        follower = holder.pop("f")
        assert not follower.running
        follower.stop()  # waits for the drop
        assert follower._state.done.is_set()
        assert len(calls) == holder["stopped"]


def test_closing_the_store_from_the_callback(source: Store) -> None:
    mirror = Store()
    closed = threading.Event()

    def cb(ev: FollowEvent) -> None:
        if ev.kind == "applied":
            mirror.close()  # finished on a helper thread: it stops this follower first
            closed.set()

    with source.serve() as server:
        follower = mirror.follow(server.url("/servers/"), callback=cb)
        assert closed.wait(PATIENCE)
        wait_until(lambda: follower._state.done.is_set(), "the follower to be stopped by the close")
        assert mirror.closed and not follower.running


def test_closing_the_store_stops_its_followers_and_servers(source: Store) -> None:
    mirror = Store()
    server = source.serve()
    follower = mirror.follow(server.url("/servers/"))
    follower.wait_for_cursor(4, timeout=PATIENCE)
    second = mirror.follow(server.url("/servers/"), prefix="/second/")
    mirror.close()
    assert not follower.running and not second.running
    with pytest.raises(tidemark.ClosedError):
        follower.status()
    follower.stop()
    second.stop()
    source.close()
    assert not server.running
    server.stop()


def test_a_dropped_follower_stops(source: Store) -> None:
    with source.serve() as server, Store() as mirror:
        follower = mirror.follow(server.url("/servers/"), callback=lambda ev: None)
        follower.wait_for_cursor(4, timeout=PATIENCE)
        ref = weakref.ref(follower)
        del follower
        gc.collect()
        assert ref() is None
        assert not ls._registry  # dropped: the library called drop_userdata
        before = mirror.revision
        source.put("/servers/10", "{}")
        # nothing follows any more: a second follower (with its own prefix) sees the write,
        # the first one's prefix does not
        with mirror.follow(server.url("/servers/"), prefix="/check/") as check:
            check.wait_for_cursor(source.revision, timeout=PATIENCE)
        assert mirror.get("/servers/10") is None and mirror.get("/check/10") is not None
        assert mirror.revision > before


def test_stop_waits_and_is_idempotent(store: Store) -> None:
    follower = store.follow("http://127.0.0.1:1/nothing/", **FAST)
    threads = [threading.Thread(target=follower.stop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert not follower.running and follower._state.done.is_set()
    follower.stop()
    assert "stopped" in repr(follower)


def test_wait_for_times_out(store: Store) -> None:
    with store.follow("http://127.0.0.1:1/nothing/", **FAST) as follower:
        with pytest.raises(TimeoutError):
            follower.wait_for(lambda s: False, timeout=0.1)


def test_bad_follower_arguments(store: Store) -> None:
    for url in ("not a url", "gopher://127.0.0.1/a/", "ftp://x/"):
        with pytest.raises(tidemark.InvalidArgumentError):
            store.follow(url)
    with pytest.raises(tidemark.InvalidArgumentError, match="bogus"):
        store.follow("http://127.0.0.1:1/a/", bogus=1)
    with pytest.raises(tidemark.InvalidArgumentError):
        store.follow("http://127.0.0.1:1/a/", prefix="")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.follow("http://127.0.0.1:1/a/", poll_ms=0)
    with pytest.raises(tidemark.InvalidArgumentError, match="cursor key"):
        store.follow("http://127.0.0.1:1/a/", cursor_key="/a/cursor")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.follow("http://127.0.0.1:1/a/", prefix=b"\xff")
    with pytest.raises(TypeError):
        store.follow("http://127.0.0.1:1/a/", callback=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.follow(b"http://127.0.0.1:1/a/")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.follow("http://127.0.0.1:1/a/", token=object())
    # the prefix "/" and a prefix holding keys the follower did not mirror are refused
    with pytest.raises(tidemark.InvalidArgumentError, match="allow_root_prefix"):
        store.follow("http://127.0.0.1:1/")
    store.put("/held/x", "{}")
    with pytest.raises(tidemark.InvalidArgumentError, match="adopt"):
        store.follow("http://127.0.0.1:1/held/")
    assert not ls._registry  # every failed start dropped its userdata
    with store.follow("http://127.0.0.1:1/held/", adopt=True, **FAST) as f:
        assert f.status()["prefix"] == "/held/"
    # bytes prefixes and cursor keys are fine when they are UTF-8
    with pytest.raises(tidemark.InvalidArgumentError, match="reserved"):
        store.follow("http://127.0.0.1:1/a/", cursor_key=b"\0c")
    with store.follow("http://127.0.0.1:1/a/", prefix=b"/b/", cursor_key=b"/c", **FAST) as f:
        assert f.status()["prefix"] == "/b/"


def test_follow_event_kind_is_a_string_enum() -> None:
    assert FollowEventKind.APPLIED == "applied"
    assert str(FollowEventKind.RESYNC_DONE) == "resync_done"
    assert [k.value for k in FollowEventKind] == [
        "connected", "applied", "malformed", "error", "resync_started", "resync_done"
    ]
    ev = FollowEvent(FollowEventKind.ERROR, retry_ms=100, message="refused")
    assert ev.records == 0 and ev.cursor is None and ev.line == b""
    assert repr(ev) == "FollowEvent(kind=error, retry_ms=100, message='refused')"
