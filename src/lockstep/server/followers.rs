//! The follow streams a server serves: who each follower is, the revision it has been sent
//! everything up to, and so how far behind it is. An entry lives exactly as long as its
//! stream (a guard removes it), so a scrape costs one line per connected follower and
//! nothing is left of those gone; the number of entries is bounded by `max_follows`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::metrics::{Family, Sample};

/// A follower's name is cut to this many characters (it comes from the request).
const MAX_NAME: usize = 128;

#[derive(Default)]
pub(super) struct Followers {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, Arc<Follower>>>,
}

pub(super) struct Follower {
    id: u64,
    /// The `follower=` query parameter, else the peer's address.
    name: String,
    prefix: String,
    since: Instant,
    /// Every matching change up to this revision has been handed to the connection.
    position: AtomicU64,
}

/// Removes its follower from the registry when the stream ends.
pub(super) struct Registered<'a> {
    followers: &'a Followers,
    follower: Arc<Follower>,
}

impl Followers {
    pub(super) fn register(&self, name: &str, prefix: &[u8], position: u64) -> Registered<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let follower = Arc::new(Follower {
            id,
            name: name.chars().take(MAX_NAME).collect(),
            prefix: String::from_utf8_lossy(prefix).into_owned(),
            since: Instant::now(),
            position: AtomicU64::new(position),
        });
        self.live.lock().insert(id, follower.clone());
        Registered { followers: self, follower }
    }

    fn snapshot(&self) -> Vec<Arc<Follower>> {
        self.live.lock().values().cloned().collect()
    }

    /// `tidemark_followers` and, per connected follower, its lag and position.
    pub(super) fn families(&self, current: u64) -> Vec<Family> {
        let all = self.snapshot();
        let per = |f: &dyn Fn(&Follower) -> u64| {
            all.iter()
                .map(|x| {
                    let id = x.id.to_string();
                    Sample::labeled(&[("follower", &x.name), ("id", &id)], f(x) as f64)
                })
                .collect::<Vec<_>>()
        };
        vec![
            Family::gauge(
                "tidemark_followers",
                "Follow streams connected to this server",
                vec![Sample::plain(all.len() as f64)],
            ),
            Family::gauge(
                "tidemark_follower_lag_revisions",
                "The store's revision minus the revision a follower has been sent everything up to",
                per(&|x| x.lag(current)),
            ),
            Family::gauge(
                "tidemark_follower_position_revision",
                "The revision a follower has been sent every matching change up to",
                per(&|x| x.position.load(Ordering::Relaxed)),
            ),
        ]
    }

    /// The followers for the status page, in connection order.
    pub(super) fn json(&self, current: u64) -> Value {
        let list: Vec<Value> = self
            .snapshot()
            .iter()
            .map(|x| {
                json!({
                    "id": x.id,
                    "name": x.name,
                    "prefix": x.prefix,
                    "position": x.position.load(Ordering::Relaxed),
                    "lag": x.lag(current),
                    "connected_ms": x.since.elapsed().as_millis() as u64,
                })
            })
            .collect();
        Value::Array(list)
    }
}

impl Follower {
    fn lag(&self, current: u64) -> u64 {
        current.saturating_sub(self.position.load(Ordering::Relaxed))
    }
}

impl Registered<'_> {
    /// The stream has been sent every matching change up to `revision` (never moves back).
    pub(super) fn sent_up_to(&self, revision: u64) {
        self.follower.position.fetch_max(revision, Ordering::Relaxed);
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.followers.live.lock().remove(&self.follower.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_guard_and_lag_follows_the_position() {
        let f = Followers::default();
        let a = f.register("a", b"/x/", 3);
        let long = "n".repeat(500);
        let b = f.register(&long, b"/y/", 0);
        assert_eq!(f.families(10)[0].samples.len(), 1);
        let lags: Vec<u64> =
            f.json(10).as_array().unwrap().iter().map(|v| v["lag"].as_u64().unwrap()).collect();
        assert_eq!(lags, [7, 10]);
        a.sent_up_to(9);
        a.sent_up_to(5); // never back
        assert_eq!(f.json(10)[0]["position"], 9);
        assert_eq!(f.json(10)[1]["name"].as_str().unwrap().len(), MAX_NAME);
        drop(b);
        assert_eq!(f.json(10).as_array().unwrap().len(), 1);
        drop(a);
        assert_eq!(f.json(10), json!([]));
        assert_eq!(f.families(10)[1].samples.len(), 0);
    }
}
