"""Store metrics from Python: the dict form, and the Prometheus text form read back by
Prometheus's own parser (prometheus_client); a server's /metrics with its followers' lag."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tidemark
from tidemark import Store
from tidemark.persistent import PARK

from conftest import wait_until


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_text_parses_as_prometheus_and_matches_the_dict(store: Store) -> None:
    store.put("a", "1")
    store.put("b", "2")
    with pytest.raises(tidemark.NotFoundError):
        store.delete("missing")
    store.append("orders", [("t", b"x"), ("t", b"y")])
    store.subscription_create("sub", start="beginning", max_in_flight=1)
    with store.subscription_connect("sub") as c:
        got = c.next(10)
        got[0].nack(PARK)
        samples = _samples(store.metrics_text())
        m = store.metrics()
    rev = store.revision
    assert samples[("tidemark_revision", ())] == rev == m["tidemark_revision"]
    assert samples[("tidemark_commits_total", ())] == m["tidemark_commits_total"] >= 3
    assert samples[("tidemark_write_errors_total", (("status", "not_found"),))] == 1
    assert samples[("tidemark_subscription_parked", (("subscription", "sub"),))] == 1
    assert samples[("tidemark_subscription_lag", (("subscription", "sub"),))] == 1
    assert samples[("tidemark_commit_duration_seconds_count", ())] == m["tidemark_commit_duration_seconds"]["count"]
    assert samples[("tidemark_commit_duration_seconds_bucket", (("le", "+Inf"),))] == m["tidemark_commit_duration_seconds"]["count"]
    parked = [s for s in m["tidemark_subscription_parked"] if s["labels"] == {"subscription": "sub"}]
    assert parked[0]["value"] == 1
    kinds = {s["labels"]["kind"]: s["value"] for s in m["tidemark_watchers"]}
    assert set(kinds) == {"push", "pull"}


def test_metrics_off_counts_nothing() -> None:
    with Store(metrics=False) as s:
        s.put("a", "1")
        m = s.metrics()
        assert m["tidemark_revision"] == 1 and m["tidemark_commits_total"] == 0


def test_closed_store_raises() -> None:
    s = Store()
    s.close()
    with pytest.raises(tidemark.ClosedError):
        s.metrics_text()


def _scrape(server) -> dict:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as r:
        return _samples(r.read().decode())


def _value(store: Store, key: str) -> bytes:
    try:
        return store.get(key).value
    except tidemark.NotFoundError:
        return b""


def test_server_metrics_list_each_follower_with_its_lag(store: Store) -> None:
    store.put("/s/a", "{}")
    with store.serve(heartbeat_ms=50) as server, Store() as mirror:
        assert _scrape(server)[("tidemark_followers", ())] == 0
        follower = mirror.follow(server.url("/s/"), name="py-1", poll_ms=50)
        lag = lambda: {k[1]: v for k, v in _scrape(server).items() if k[0] == "tidemark_follower_lag_revisions"}  # noqa: E731
        mine = lambda: [dict(k) for k in lag() if dict(k).get("follower") == "py-1"]  # noqa: E731
        wait_until(lambda: bool(mine()), "py-1 in /metrics")
        labels = mine()
        assert set(labels[0]) == {"follower", "id"}
        for i in range(50):
            store.put(f"/s/{i}", "{}")
        store.put("/elsewhere", "{}")
        wait_until(lambda: [v for k, v in lag().items() if dict(k)["follower"] == "py-1"] == [0.0], "py-1 at lag 0")
        pos = _scrape(server)[("tidemark_follower_position_revision", tuple(sorted(labels[0].items())))]
        assert pos == store.revision
        wait_until(lambda: b'"id":"49"' in _value(mirror, "/s/49"), "the mirror to apply what it was sent")
        follower.stop()
        wait_until(lambda: _scrape(server)[("tidemark_followers", ())] == 0 and not lag(), "py-1 gone")


def test_latencies_are_sampled_and_counters_exact() -> None:
    with Store() as s:
        for i in range(65):
            s.put(f"k{i}", "v")
        m = s.metrics()
        # One write call in 64 is timed by default, the first included: calls 0 and 64.
        assert (m["tidemark_commits_total"], m["tidemark_commit_duration_seconds"]["count"]) == (65, 2)
    with Store(metrics_sample_every=1) as s:
        for i in range(5):
            s.put(f"k{i}", "v")
        assert s.metrics()["tidemark_commit_duration_seconds"]["count"] == 5
    with pytest.raises(tidemark.InvalidArgumentError, match="metrics_sample_every"):
        Store(metrics_sample_every=0)
