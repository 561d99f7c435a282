"""Store metrics from Python: the dict form, and the Prometheus text form read back by
Prometheus's own parser (prometheus_client)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tidemark
from tidemark import Store
from tidemark.persistent import PARK


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
