//! Store metrics: counters and histograms that the write path updates with relaxed atomics
//! (no lock, no allocation), and the families `Store::metrics` reads from them and from the
//! store's state when asked, rendered as Prometheus text or as JSON.
//!
//! With the store option `"metrics": false` the write path skips its updates (and the clock
//! reads the latency histograms need); the gauges read at scrape time are always there.
//! Latencies and group sizes are sampled (`"metrics_sample_every"`, one write call and one
//! write group in 64 by default): two clock reads and a histogram update cost a fifth of an
//! in-memory put's own instructions, and a distribution needs samples, not every call.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::error::Error;

/// Latency bucket bounds in nanoseconds: 10 µs to 10 s.
const SECONDS_BOUNDS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// Commits per write group.
const SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];

/// A Prometheus histogram over fixed bounds (`le`, inclusive), in integer units.
pub(crate) struct Histogram {
    bounds: &'static [u64],
    /// What one unit is in the exposed base unit (1e-9 for nanoseconds as seconds).
    unit: f64,
    /// One count per bound, then the overflow.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64], unit: f64) -> Histogram {
        Histogram {
            bounds,
            unit,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, v: u64) {
        self.counts[self.bounds.partition_point(|&b| b < v)].fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
    }

    fn sample(&self) -> Sample {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            buckets.push((self.bounds.get(i).map(|&b| b as f64 * self.unit), cumulative));
        }
        let sum = self.sum.load(Relaxed) as f64 * self.unit;
        Sample { labels: Vec::new(), value: Reading::Histogram { buckets, sum, count: cumulative } }
    }
}

/// The status label of an error, as the C layer names it (lower case, without `TIDEMARK_ERR_`).
fn status_label(e: &Error) -> usize {
    match e {
        Error::InvalidArgument(_) => 0,
        Error::NotFound(_) => 1,
        Error::Compacted { .. } => 2,
        Error::FutureRevision { .. } => 3,
        Error::Conflict { .. } => 4,
        Error::WrongExpectedVersion { .. } => 5,
        Error::Timeout => 6,
        Error::Closed => 7,
        Error::Io(_) => 8,
        Error::Corrupt(_) => 9,
        Error::Locked(_) => 10,
        Error::TooLarge(_) => 11,
    }
}

const STATUS_LABELS: [&str; 12] = [
    "invalid_argument",
    "not_found",
    "compacted",
    "future_revision",
    "conflict",
    "wrong_expected_version",
    "timeout",
    "closed",
    "io",
    "corrupt",
    "locked",
    "too_large",
];

/// What the store's hot paths count. One per store.
pub(crate) struct Metrics {
    pub enabled: bool,
    /// One write call (and one write group) in this many is timed.
    sample_every: u64,
    /// Calls (groups) left before the next timed one.
    call_ticks: AtomicU64,
    group_ticks: AtomicU64,
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub commit_seconds: Histogram,
    pub sync_seconds: Histogram,
    pub group_size: Histogram,
    pub catch_up_reads: AtomicU64,
    pub tail_commits: AtomicU64,
    pub compactions: AtomicU64,
    errors: [AtomicU64; STATUS_LABELS.len()],
}

impl Metrics {
    pub(crate) fn new(enabled: bool, sample_every: u64) -> Metrics {
        Metrics {
            enabled,
            sample_every: sample_every.max(1),
            call_ticks: AtomicU64::new(0),
            group_ticks: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            events: AtomicU64::new(0),
            commit_seconds: Histogram::new(SECONDS_BOUNDS, 1e-9),
            sync_seconds: Histogram::new(SECONDS_BOUNDS, 1e-9),
            group_size: Histogram::new(SIZE_BOUNDS, 1.0),
            catch_up_reads: AtomicU64::new(0),
            tail_commits: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            errors: Default::default(),
        }
    }

    /// A start time for a write call's latency, when metrics are on and this call is one of
    /// the sampled ones (the first, then one in `sample_every`).
    pub(crate) fn start(&self) -> Option<Instant> {
        self.sampled(&self.call_ticks).then(Instant::now)
    }

    /// `start` for a write group (its size and its sync); called under the store's write lock.
    pub(crate) fn start_group(&self) -> Option<Instant> {
        self.sampled(&self.group_ticks).then(Instant::now)
    }

    /// Counts down the calls to the next sampled one with a plain load and store (no locked
    /// add, no division): concurrent callers may lose a tick, which only moves which call is
    /// timed.
    fn sampled(&self, ticks: &AtomicU64) -> bool {
        if !self.enabled {
            return false;
        }
        let left = ticks.load(Relaxed);
        ticks.store(if left == 0 { self.sample_every - 1 } else { left - 1 }, Relaxed);
        left == 0
    }

    /// Adds `n` to a counter, when metrics are on.
    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        if self.enabled {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// `add` for a counter that only changes under the store's write lock: the lock orders
    /// the updates, so a plain load and store does (no locked instruction on the hot path).
    pub(crate) fn add_locked(&self, counter: &AtomicU64, n: u64) {
        if self.enabled {
            counter.store(counter.load(Relaxed) + n, Relaxed);
        }
    }

    /// Ends a latency begun with `start`.
    pub(crate) fn elapsed(h: &Histogram, started: Option<Instant>) {
        if let Some(t) = started {
            h.observe(t.elapsed().as_nanos().min(u64::MAX as u128) as u64);
        }
    }

    /// Counts a write that failed, by status.
    pub(crate) fn error(&self, e: &Error) {
        self.add(&self.errors[status_label(e)], 1);
    }

    /// The counter and histogram families (the store adds its gauges).
    pub(crate) fn families(&self, out: &mut Vec<Family>) {
        let counter = |v: &AtomicU64| vec![Sample::plain(v.load(Relaxed) as f64)];
        out.push(Family::counter("tidemark_commits_total", "Commits published", counter(&self.commits)));
        out.push(Family::counter(
            "tidemark_events_total",
            "Events (key changes) published",
            counter(&self.events),
        ));
        out.push(Family::histogram(
            "tidemark_commit_duration_seconds",
            "Time a write call took, from its call to its result (a durable store's includes the sync)",
            self.commit_seconds.sample(),
        ));
        out.push(Family::histogram(
            "tidemark_log_sync_duration_seconds",
            "Time a directory store's write group spent flushing its log (fdatasync with sync always)",
            self.sync_seconds.sample(),
        ));
        out.push(Family::histogram(
            "tidemark_write_group_size",
            "Commits per write group (one flush each) of a directory store",
            self.group_size.sample(),
        ));
        out.push(Family::counter(
            "tidemark_catch_up_reads_total",
            "Log reads for watchers that fell behind",
            counter(&self.catch_up_reads),
        ));
        out.push(Family::counter(
            "tidemark_tail_commits_total",
            "Commits of other processes caught up from a shared log",
            counter(&self.tail_commits),
        ));
        out.push(Family::counter(
            "tidemark_compactions_total",
            "Compaction runs",
            counter(&self.compactions),
        ));
        let errors = STATUS_LABELS
            .iter()
            .zip(&self.errors)
            .map(|(l, n)| Sample::labeled(&[("status", l)], n.load(Relaxed) as f64))
            .collect();
        out.push(Family::counter("tidemark_write_errors_total", "Writes that failed, by status", errors));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name, help, type and samples.
pub(crate) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

pub(crate) struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Reading,
}

pub(crate) enum Reading {
    Number(f64),
    /// Cumulative counts by upper bound (`None` = +Inf).
    Histogram {
        buckets: Vec<(Option<f64>, u64)>,
        sum: f64,
        count: u64,
    },
}

impl Sample {
    pub(crate) fn plain(v: f64) -> Sample {
        Sample { labels: Vec::new(), value: Reading::Number(v) }
    }

    pub(crate) fn labeled(labels: &[(&'static str, &str)], v: f64) -> Sample {
        Sample {
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value: Reading::Number(v),
        }
    }
}

impl Family {
    pub(crate) fn counter(name: &'static str, help: &'static str, samples: Vec<Sample>) -> Family {
        Family { name, help, kind: Kind::Counter, samples }
    }

    pub(crate) fn gauge(name: &'static str, help: &'static str, samples: Vec<Sample>) -> Family {
        Family { name, help, kind: Kind::Gauge, samples }
    }

    fn histogram(name: &'static str, help: &'static str, sample: Sample) -> Family {
        Family { name, help, kind: Kind::Histogram, samples: vec![sample] }
    }
}

/// Prometheus text exposition format, version 0.0.4.
pub(crate) fn text(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", f.name, f.help, f.name);
        for s in &f.samples {
            match &s.value {
                Reading::Number(v) => {
                    let _ = writeln!(out, "{}{} {}", f.name, labels(&s.labels, None), number(*v));
                }
                Reading::Histogram { buckets, sum, count } => {
                    for (le, n) in buckets {
                        let le = le.map_or("+Inf".to_string(), number);
                        let _ = writeln!(out, "{}_bucket{} {n}", f.name, labels(&s.labels, Some(&le)));
                    }
                    let _ = writeln!(out, "{}_sum{} {}", f.name, labels(&s.labels, None), number(*sum));
                    let _ = writeln!(out, "{}_count{} {count}", f.name, labels(&s.labels, None));
                }
            }
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn labels(labels: &[(&'static str, String)], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The same families as one JSON object by name: a family of one unlabeled number is that
/// number; a histogram is `{"count", "sum", "buckets": {"<le>": cumulative count}}`; a
/// labeled family is a list of `{"labels": {...}, "value": v}`.
pub(crate) fn json(families: &[Family]) -> Value {
    let mut out = Map::new();
    for f in families {
        let reading = |r: &Reading| match r {
            Reading::Number(v) => json_number(*v),
            Reading::Histogram { buckets, sum, count } => {
                let b: Map<String, Value> =
                    buckets.iter().map(|(le, n)| (le.map_or("+Inf".to_string(), number), json!(n))).collect();
                json!({"count": count, "sum": json_number(*sum), "buckets": b})
            }
        };
        let v = match &f.samples[..] {
            [s] if s.labels.is_empty() => reading(&s.value),
            samples => Value::Array(
                samples
                    .iter()
                    .map(|s| {
                        let l: Map<String, Value> =
                            s.labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
                        json!({"labels": l, "value": reading(&s.value)})
                    })
                    .collect(),
            ),
        };
        out.insert(f.name.to_string(), v);
    }
    Value::Object(out)
}

/// Whole numbers as JSON integers (counts stay integers in Python and Erlang).
fn json_number(v: f64) -> Value {
    if v.fract() == 0.0 && (0.0..9e15).contains(&v) {
        json!(v as u64)
    } else {
        json!(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new(SIZE_BOUNDS, 1.0);
        for v in [1, 1, 2, 3, 300] {
            h.observe(v);
        }
        let Reading::Histogram { buckets, sum, count } = h.sample().value else { panic!() };
        assert_eq!(buckets[0], (Some(1.0), 2));
        assert_eq!(buckets[1], (Some(2.0), 3));
        assert_eq!(buckets[2], (Some(4.0), 4));
        assert_eq!(buckets.last(), Some(&(None, 5)));
        assert_eq!((sum, count), (307.0, 5));
    }

    #[test]
    fn text_escapes_labels_and_names_every_type() {
        let fams = [Family::gauge("g", "a gauge", vec![Sample::labeled(&[("name", "a\"b\\c\nd")], 1.5)])];
        assert_eq!(text(&fams), "# HELP g a gauge\n# TYPE g gauge\ng{name=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    }

    #[test]
    fn one_call_in_sample_every_is_timed_the_first_included() {
        let m = Metrics::new(true, 4);
        let timed = (0..10).filter(|_| m.start().is_some()).count();
        assert_eq!(timed, 3, "calls 0, 4 and 8");
        assert!(m.start_group().is_some(), "groups tick on their own");
        m.add_locked(&m.commits, 2);
        m.add_locked(&m.commits, 3);
        assert_eq!(m.commits.load(Relaxed), 5);
    }

    #[test]
    fn off_means_nothing_counted() {
        let m = Metrics::new(false, 1);
        m.add(&m.commits, 1);
        m.error(&Error::Timeout);
        Metrics::elapsed(&m.commit_seconds, m.start());
        let Reading::Histogram { count, .. } = m.commit_seconds.sample().value else { panic!() };
        assert_eq!((m.commits.load(Relaxed), count), (0, 0));
        assert!(m.errors.iter().all(|e| e.load(Relaxed) == 0));
    }
}
