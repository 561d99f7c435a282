//! The follower thread: the reconnect loop with backoff and jitter, and one HTTP session
//! (request, status handling, reading the body line by line).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::{FollowEvent, Outcome, Runner};
use crate::lockstep::http::{self, BodyRead, Url};
use crate::lockstep::record::{cursor_text, LineSplitter};

impl Runner {
    pub(super) fn emit(&mut self, ev: &FollowEvent<'_>) {
        if self.shared.stopped() {
            return;
        }
        if let Some(cb) = self.callback.as_mut() {
            let _ = catch_unwind(AssertUnwindSafe(|| cb(ev)));
        }
    }

    fn set_state(&self, state: &'static str) {
        self.shared.stats.lock().state = state;
    }

    fn jitter(&mut self, ms: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ms / 2 + self.rng % (ms / 2 + 1)
    }

    pub(super) fn run(&mut self) {
        if self.resync {
            self.emit(&FollowEvent::ResyncStarted {
                reason: "first sync (or an interrupted resync): full sync from 0",
            });
        }
        while !self.shared.stopped() {
            let resync = self.resync;
            if resync {
                self.seen.clear();
            }
            let url = self.request_url(resync);
            let outcome = self.session(&url);
            self.discard_pending();
            self.shared.stats.lock().connected = false;
            match outcome {
                Outcome::Stopped => break,
                Outcome::StoreClosed => {
                    self.store_closed();
                    break;
                }
                Outcome::Ended { framed: false } if resync => {
                    // Closing the connection also ends an unframed body when it was cut: do
                    // not sweep on that, ask again.
                    self.fail("the full sync's response was not framed (no Content-Length, not chunked), so it cannot be told from a cut one: nothing deleted; retrying".into())
                }
                Outcome::Ended { framed: true } if resync => match self.finish_resync() {
                    Ok(()) => {}
                    Err(Outcome::StoreClosed) => {
                        self.store_closed();
                        break;
                    }
                    Err(_) => self.fail("the resync could not be completed locally; retrying".into()),
                },
                Outcome::Ended { .. } => {
                    self.set_state("polling");
                    if self.shared.wait(Duration::from_millis(self.opts.poll_ms)) {
                        break;
                    }
                }
                Outcome::Gone(msg) | Outcome::BadCursor(msg) if !resync => match self.start_resync(&msg) {
                    // A server that keeps refusing the cursor it sends is not asked in a
                    // tight loop.
                    Ok(()) if msg.starts_with("400") => self.pause(),
                    Ok(()) => {}
                    Err(Outcome::StoreClosed) => {
                        self.store_closed();
                        break;
                    }
                    Err(_) => self.fail("cannot record the resync locally; retrying".into()),
                },
                Outcome::Gone(msg) | Outcome::BadCursor(msg) => {
                    self.fail(format!("the server refused a full sync: {msg}"))
                }
                Outcome::Failed(msg) => self.fail(msg),
            }
        }
        self.set_state("stopped");
    }

    /// Reports a failure and sleeps the backoff (with jitter), doubling it.
    /// The local store was closed under the follower: one ERROR event, then the follower
    /// ends (nothing more can be applied); its owner still stops it to free it.
    fn store_closed(&mut self) {
        let message = "the local store was closed; the follower has ended";
        {
            let mut s = self.shared.stats.lock();
            s.errors += 1;
            s.last_error = Some(message.into());
        }
        self.emit(&FollowEvent::Error { message, retry_ms: 0 });
    }

    /// The next backoff delay (with jitter); doubles the backoff.
    fn next_delay(&mut self) -> u64 {
        let delay = self.jitter(self.backoff);
        self.backoff = (self.backoff.saturating_mul(2)).min(self.opts.backoff_max_ms);
        delay
    }

    /// Sleeps the backoff, doubling it.
    fn pause(&mut self) {
        let delay = self.next_delay();
        self.shared.wait(Duration::from_millis(delay));
    }

    fn fail(&mut self, message: String) {
        let delay = self.next_delay();
        {
            let mut s = self.shared.stats.lock();
            s.errors += 1;
            s.last_error = Some(message.clone());
            s.state = "backoff";
        }
        self.emit(&FollowEvent::Error { message: &message, retry_ms: delay });
        self.shared.wait(Duration::from_millis(delay));
    }

    fn request_url(&self, resync: bool) -> Url {
        let mut u = self.base.clone();
        let cursor = if resync { "0".to_string() } else { cursor_text(&self.cursor) };
        let mut params: Vec<String> = Vec::new();
        match &self.opts.cursor_param {
            Some(p) => {
                params.push(format!("{}={}", http::encode_component(p), http::encode_component(&cursor)))
            }
            None => u.path.push_str(&http::encode_component(&cursor)),
        }
        let has_follow = u.query.split('&').any(|p| p == "follow" || p.starts_with("follow="));
        if self.opts.follow && !resync && !has_follow {
            params.push("follow=true".into());
        }
        if let Some(name) = &self.opts.name {
            params.push(format!("follower={}", http::encode_component(name)));
        }
        for p in params {
            if !u.query.is_empty() {
                u.query.push('&');
            }
            u.query.push_str(&p);
        }
        u
    }

    fn session(&mut self, url: &Url) -> Outcome {
        self.set_state("connecting");
        let stop = &self.shared.stop;
        let auth = self.opts.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Accept", "application/x-ndjson")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let head_timeout = Duration::from_millis(match self.opts.idle_timeout_ms {
            0 => 60_000,
            n => n.max(self.opts.connect_timeout_ms),
        });
        let mut resp = match self.client.request("GET", url, &headers, b"", head_timeout, stop) {
            Ok(r) => r,
            Err(_) if self.shared.stopped() => return Outcome::Stopped,
            Err(e) => {
                return Outcome::Failed(format!(
                    "request to {}:{}{} failed: {e}",
                    url.host,
                    url.port,
                    url.target()
                ))
            }
        };
        if resp.status != 200 {
            let body = resp.read_all(4096, Duration::from_secs(2)).unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_string();
            let cursor = cursor_text(&self.cursor);
            return if resp.status == 410 {
                Outcome::Gone(format!("410 Gone: {text}"))
            } else if resp.status == 400 {
                Outcome::BadCursor(format!("400 Bad Request for cursor {cursor:?}: {text}"))
            } else {
                Outcome::Failed(format!("HTTP {} from {}: {text}", resp.status, url.target()))
            };
        }
        self.backoff = self.opts.backoff_initial_ms;
        {
            let mut s = self.shared.stats.lock();
            s.connected = true;
            s.connections += 1;
            s.state = "streaming";
        }
        let target = url.target();
        self.emit(&FollowEvent::Connected { url: &target });
        let mut splitter = LineSplitter::new(self.opts.max_line_bytes);
        let mut body = Vec::with_capacity(64 * 1024);
        let mut last_data = Instant::now();
        let idle = Duration::from_millis(self.opts.idle_timeout_ms);
        let mut failure: Option<Outcome> = None;
        loop {
            if self.shared.stopped() {
                return self.flush().err().unwrap_or(Outcome::Stopped);
            }
            body.clear();
            let read = resp.read_body(&mut body);
            match read {
                Ok(BodyRead::Data(_)) => {
                    last_data = Instant::now();
                    splitter.feed(&body, &mut |line| {
                        if failure.is_none() {
                            if let Err(o) = self.on_line(line) {
                                failure = Some(o);
                            }
                        }
                    });
                }
                Ok(BodyRead::Idle) => {
                    if self.opts.idle_timeout_ms > 0 && last_data.elapsed() > idle {
                        let _ = self.flush();
                        return Outcome::Failed(format!(
                            "nothing received for {} ms (not even a heartbeat); reconnecting",
                            self.opts.idle_timeout_ms
                        ));
                    }
                    continue;
                }
                Ok(BodyRead::End) => {
                    splitter.finish(&mut |line| {
                        if failure.is_none() {
                            if let Err(o) = self.on_line(line) {
                                failure = Some(o);
                            }
                        }
                    });
                    if let Some(f) = failure {
                        return f;
                    }
                    let framed = resp.is_framed();
                    return self.flush().err().unwrap_or(Outcome::Ended { framed });
                }
                Err(e) => {
                    // Complete lines already read are applied; a partial one is dropped and
                    // asked again from the cursor.
                    if let Some(f) = failure {
                        return f;
                    }
                    if let Err(o) = self.flush() {
                        return o;
                    }
                    return Outcome::Failed(format!("connection to {} dropped: {e}", url.target()));
                }
            }
            if let Some(f) = failure.take() {
                return f;
            }
            if let Err(o) = self.flush() {
                return o;
            }
        }
    }
}
