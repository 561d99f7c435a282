//! Store metrics: what the write path counts (commits, events, errors by status, latency and
//! write-group histograms, compactions), the gauges read at the call (watchers by kind, queued
//! events, persistent subscriptions' lag / in-flight / parked), the option that turns the
//! counting off, and the Prometheus text form.

use std::time::Duration;

use serde_json::Value;
use tidemark::{
    ExpectedVersion, Nack, NewEvent, Selector, Start, Store, StreamSelector, SubscriptionOptions,
    WatchOptions,
};

fn number(m: &Value, name: &str) -> f64 {
    m[name].as_f64().unwrap_or_else(|| panic!("{name} is not a number: {}", m[name]))
}

/// The value of the sample of `name` whose label `label` is `value`.
fn labeled(m: &Value, name: &str, label: &str, value: &str) -> f64 {
    m[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: {}", m[name]))
        .iter()
        .find(|s| s["labels"][label] == value)
        .unwrap_or_else(|| panic!("no {name}{{{label}={value:?}}} in {}", m[name]))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn writes_errors_and_watchers_are_counted() {
    let s = Store::memory(Some(r#"{"metrics_sample_every": 1}"#)).unwrap();
    s.put(b"a", b"1").unwrap();
    s.commit(&[tidemark::Op::Put(b"b", b"2"), tidemark::Op::Put(b"c", b"3")]).unwrap();
    assert!(s.put_if(b"a", b"x", 99).is_err());
    assert!(s.delete(b"nope").is_err());
    let _pull = s.watch_pull(Selector::All, &WatchOptions::default()).unwrap();
    let m = s.metrics_json().unwrap();
    assert_eq!(number(&m, "tidemark_revision"), 3.0);
    assert_eq!(number(&m, "tidemark_commits_total"), 2.0);
    assert_eq!(number(&m, "tidemark_events_total"), 3.0);
    assert_eq!(m["tidemark_commit_duration_seconds"]["count"], 4, "every write call, failed ones too");
    assert_eq!(labeled(&m, "tidemark_write_errors_total", "status", "conflict"), 1.0);
    assert_eq!(labeled(&m, "tidemark_write_errors_total", "status", "not_found"), 1.0);
    assert_eq!(labeled(&m, "tidemark_watchers", "kind", "pull"), 1.0);
    assert_eq!(labeled(&m, "tidemark_watchers", "kind", "push"), 0.0);
    assert_eq!(m["tidemark_write_group_size"]["count"], 0, "an in-memory store has no write groups");
    s.compact(3).unwrap();
    assert_eq!(number(&s.metrics_json().unwrap(), "tidemark_compactions_total"), 1.0);
}

#[test]
fn a_directory_store_counts_groups_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().to_str(), Some(r#"{"metrics_sample_every": 1}"#)).unwrap();
    for i in 0..5u8 {
        s.put(&[b'k', i], b"v").unwrap();
    }
    let m = s.metrics_json().unwrap();
    assert_eq!(m["tidemark_write_group_size"]["count"], 5, "one writer at a time: a group each");
    assert_eq!(m["tidemark_write_group_size"]["buckets"]["1"], 5);
    assert_eq!(m["tidemark_log_sync_duration_seconds"]["count"], 5);
    assert!(m["tidemark_log_sync_duration_seconds"]["sum"].as_f64().unwrap() > 0.0);
}

#[test]
fn latencies_and_groups_are_sampled_and_counters_count_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().to_str(), Some(r#"{"sync": "none"}"#)).unwrap();
    for i in 0..130u8 {
        s.put(&[b'k', i], b"v").unwrap();
    }
    let m = s.metrics_json().unwrap();
    assert_eq!(number(&m, "tidemark_commits_total"), 130.0);
    assert_eq!(number(&m, "tidemark_events_total"), 130.0);
    // The default times the first write call and group, then one in 64: calls 0, 64 and 128.
    assert_eq!(m["tidemark_commit_duration_seconds"]["count"], 3);
    assert_eq!(m["tidemark_commit_duration_seconds"]["buckets"]["+Inf"], 3);
    assert_eq!(m["tidemark_write_group_size"]["count"], 3);
    assert_eq!(m["tidemark_log_sync_duration_seconds"]["count"], 3);
    let s = Store::memory(Some(r#"{"metrics_sample_every": 10}"#)).unwrap();
    for _ in 0..25 {
        s.put(b"a", b"v").unwrap();
    }
    assert_eq!(s.metrics_json().unwrap()["tidemark_commit_duration_seconds"]["count"], 3);
    for bad in [r#"{"metrics_sample_every": 0}"#, r#"{"metrics_sample_every": "64"}"#] {
        let e = Store::memory(Some(bad)).err().expect(bad).to_string();
        assert!(e.contains("metrics_sample_every"), "{e}");
    }
}

#[test]
fn the_option_turns_counting_off_and_gauges_stay() {
    let s = Store::memory(Some(r#"{"metrics": false}"#)).unwrap();
    s.put(b"a", b"1").unwrap();
    assert!(s.delete(b"nope").is_err());
    let m = s.metrics_json().unwrap();
    assert_eq!(number(&m, "tidemark_revision"), 1.0);
    assert_eq!(number(&m, "tidemark_commits_total"), 0.0);
    assert_eq!(m["tidemark_commit_duration_seconds"]["count"], 0);
    assert_eq!(labeled(&m, "tidemark_write_errors_total", "status", "not_found"), 0.0);
    assert!(Store::memory(Some(r#"{"metrics": 1}"#)).is_err());
}

#[test]
fn subscriptions_report_lag_in_flight_and_parked() {
    let s = Store::memory(None).unwrap();
    let o = SubscriptionOptions { max_in_flight: 1, ..Default::default() };
    s.subscription_create(b"orders \"eu\"", &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let evs: Vec<NewEvent> =
        (0..3).map(|_| NewEvent { id: None, event_type: b"t", data: b"{}", metadata: b"" }).collect();
    s.append(b"o-1", &evs, ExpectedVersion::Any).unwrap();
    let name = "orders \"eu\"";
    let m = s.metrics_json().unwrap();
    assert_eq!(labeled(&m, "tidemark_subscription_lag", "subscription", name), 3.0);
    assert_eq!(labeled(&m, "tidemark_subscription_in_flight", "subscription", name), 0.0);
    let c = s.subscription_connect(name.as_bytes()).unwrap();
    let d = c.next(Duration::from_secs(10)).unwrap();
    assert_eq!(
        labeled(&s.metrics_json().unwrap(), "tidemark_subscription_in_flight", "subscription", name),
        1.0
    );
    c.nack(d[0].event.revision, Nack::Park).unwrap();
    let m = s.metrics_json().unwrap();
    assert_eq!(labeled(&m, "tidemark_subscription_parked", "subscription", name), 1.0);
    assert_eq!(labeled(&m, "tidemark_subscription_lag", "subscription", name), 2.0);
    assert_eq!(labeled(&m, "tidemark_subscription_consumers", "subscription", name), 1.0);
    let text = s.metrics_text().unwrap();
    assert!(text.contains("tidemark_subscription_parked{subscription=\"orders \\\"eu\\\"\"} 1\n"), "{text}");
}

#[test]
fn text_has_help_type_and_histogram_series() {
    let s = Store::memory(None).unwrap();
    s.put(b"a", b"1").unwrap();
    let text = s.metrics_text().unwrap();
    assert!(text.contains("# TYPE tidemark_commits_total counter\ntidemark_commits_total 1\n"), "{text}");
    assert!(text.contains("# TYPE tidemark_commit_duration_seconds histogram\n"));
    assert!(text.contains("tidemark_commit_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
    assert!(text.contains("tidemark_commit_duration_seconds_count 1\n"));
    assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("tidemark_")), "{text}");
    s.close();
    assert_eq!(s.metrics_text(), Err(tidemark::Error::Closed));
}
