//! `Store::metrics`: the write path's counters (`crate::metrics`) and the gauges read from
//! the store's state at the time of the call, as Prometheus text or JSON.

use crate::error::Result;
use crate::metrics::{self, Family, Sample};
use crate::ns;

use super::Store;

impl Store {
    /// Every metric family: gauges read now (revisions, keys, watchers by kind and what
    /// their queues hold, streams, contexts, each persistent subscription's lag, in-flight
    /// and parked counts) and the counters and histograms kept since the store opened. A
    /// call reads the state under the read lock and, for the subscriptions' lag, scans
    /// their matching stream events (as `subscription_list` does).
    pub(crate) fn metric_families(&self) -> Result<Vec<Family>> {
        let gauge = |v: usize| vec![Sample::plain(v as f64)];
        let mut out = Vec::new();
        {
            let st = self.inner.read()?;
            out.push(Family::gauge(
                "tidemark_revision",
                "The store's current revision",
                gauge(self.current_revision() as usize),
            ));
            out.push(Family::gauge(
                "tidemark_earliest_revision",
                "The oldest revision still in the log",
                gauge(st.log.earliest_revision() as usize),
            ));
            out.push(Family::gauge(
                "tidemark_keys",
                "Keys in the current state, reserved ones included",
                gauge(st.kv.len()),
            ));
            out.push(Family::gauge("tidemark_streams", "Streams", gauge(ns::streams::count(&st.kv))));
            out.push(Family::gauge("tidemark_contexts", "Contexts", gauge(ns::contexts::count(&st.kv))));
            let (mut push, mut pull, mut queued, mut bytes) = (0, 0, 0, 0);
            for w in st.watches.iter() {
                *(if w.push { &mut push } else { &mut pull }) += 1;
                let s = w.state.lock();
                queued += s.queue.len();
                bytes += s.queue.iter().map(|e| e.key.len() + e.value.len()).sum::<usize>();
            }
            let kinds = [("kind", "push")];
            out.push(Family::gauge(
                "tidemark_watchers",
                "Watches that have not ended, by kind",
                vec![Sample::labeled(&kinds, push as f64), Sample::labeled(&[("kind", "pull")], pull as f64)],
            ));
            out.push(Family::gauge(
                "tidemark_watch_queue_events",
                "Events queued for watchers",
                gauge(queued),
            ));
            out.push(Family::gauge(
                "tidemark_watch_queue_bytes",
                "Key and value bytes of the events queued for watchers",
                gauge(bytes),
            ));
        }
        let subs = self.subscription_list()?;
        let per = |f: fn(&crate::SubscriptionInfo) -> u64| {
            subs.iter()
                .map(|s| Sample::labeled(&[("subscription", &String::from_utf8_lossy(&s.name))], f(s) as f64))
                .collect::<Vec<_>>()
        };
        out.push(Family::gauge(
            "tidemark_subscription_lag",
            "Matching events after the checkpoint",
            per(|s| s.lag),
        ));
        out.push(Family::gauge(
            "tidemark_subscription_checkpoint",
            "The checkpoint revision",
            per(|s| s.checkpoint),
        ));
        out.push(Family::gauge(
            "tidemark_subscription_in_flight",
            "Events delivered and not acked",
            per(|s| s.in_flight),
        ));
        out.push(Family::gauge("tidemark_subscription_parked", "Parked events", per(|s| s.parked)));
        out.push(Family::gauge(
            "tidemark_subscription_consumers",
            "Connected consumers",
            per(|s| s.consumers),
        ));
        self.inner.metrics.families(&mut out);
        Ok(out)
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn metrics_text(&self) -> Result<String> {
        Ok(metrics::text(&self.metric_families()?))
    }

    /// The metrics as one JSON object by family name (see `metrics::json`).
    pub fn metrics_json(&self) -> Result<serde_json::Value> {
        Ok(metrics::json(&self.metric_families()?))
    }
}
