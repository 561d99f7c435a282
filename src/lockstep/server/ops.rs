//! Operator endpoints beside the feeds: `GET /metrics` (Prometheus text: the store's metrics
//! and this server's followers with their lag), `GET /ui` (the
//! status page, one HTML file built into the library), `GET /ui/status` (the JSON it polls),
//! and the admin actions, `POST /admin/...`, which need the server's `admin_token`.
//!
//! Admin actions: `POST /admin/compact?revision=N`,
//! `POST /admin/subscriptions/<name>/replay`, `POST /admin/subscriptions/<name>/reset?revision=N`.
//! Without an `admin_token` option they answer 403; without an `Authorization` header 401,
//! with a wrong token 403; none of these changes anything.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde_json::{json, Value};

use super::body::{core_error, error_response, Payload};
use super::{bearer, Shared};
use crate::error::{Error, Result};
use crate::lockstep::http::decode_component;
use crate::metrics;
use crate::store::Store;

const PAGE: &str = include_str!("ui.html");

/// Parked events listed per subscription on the page.
const PARKED_SHOWN: usize = 20;

/// The response for an operator path, or `None` when `path` is not one (a feed path).
pub(super) async fn route(sh: &Arc<Shared>, req: &Request<Incoming>) -> Option<Response<Payload>> {
    let path = req.uri().path();
    if let Some(action) = path.strip_prefix("/admin/") {
        return Some(admin(sh, req, action.to_string()).await);
    }
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path {
        "/metrics" if get => {
            let server = sh.clone();
            let text = blocking(sh, move |store| {
                let mut families = store.metric_families()?;
                families.extend(server.followers.families(store.current_revision()));
                Ok(Bytes::from(metrics::text(&families)))
            });
            Some(
                text.await
                    .map_or_else(|e| core_error(&e), |b| full(b, "text/plain; version=0.0.4; charset=utf-8")),
            )
        }
        "/ui" | "/ui/" if get => Some(full(Bytes::from_static(PAGE.as_bytes()), "text/html; charset=utf-8")),
        "/ui/status" if get => {
            let admin = sh.opts.admin_token.is_some();
            let counters = sh.counters();
            let server = sh.clone();
            let followers = move |current| server.followers.json(current);
            Some(
                blocking(sh, move |store| status(store, admin, counters, followers)).await.map_or_else(
                    |e| core_error(&e),
                    |v| full(Bytes::from(v.to_string()), "application/json"),
                ),
            )
        }
        _ => None,
    }
}

fn full(body: Bytes, content_type: &'static str) -> Response<Payload> {
    let mut r = Response::new(Payload::Full(Some(body)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Runs a store call off the runtime's threads (it may scan or wait for the disk).
async fn blocking<T: Send + 'static>(
    sh: &Arc<Shared>,
    f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let sh = sh.clone();
    tokio::task::spawn_blocking(move || f(&sh.store))
        .await
        .unwrap_or_else(|_| Err(Error::io_other("the request could not be done")))
}

/// What the page shows: the store's status, its metrics, each subscription with its first
/// parked events, the server's counters and followers, and whether admin actions are on.
fn status(store: &Store, admin: bool, server: Value, followers: impl FnOnce(u64) -> Value) -> Result<Value> {
    let subscriptions: Vec<Value> = store
        .subscription_list()?
        .into_iter()
        .map(|s| {
            let parked = store.subscription_parked(&s.name, PARKED_SHOWN).unwrap_or_default();
            json!({
                "name": String::from_utf8_lossy(&s.name),
                "checkpoint": s.checkpoint,
                "lag": s.lag,
                "in_flight": s.in_flight,
                "parked": s.parked,
                "consumers": s.consumers,
                "parked_events": parked.iter().map(|p| json!({
                    "revision": p.event.revision,
                    "stream": String::from_utf8_lossy(&p.event.stream),
                    "type": String::from_utf8_lossy(p.event.event_type()),
                    "deliveries": p.deliveries,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "store": store.status()?,
        "metrics": store.metrics_json()?,
        "subscriptions": subscriptions,
        "followers": followers(store.current_revision()),
        "server": server,
        "admin": admin,
    }))
}

async fn admin(sh: &Arc<Shared>, req: &Request<Incoming>, action: String) -> Response<Payload> {
    let Some(token) = &sh.opts.admin_token else {
        return error_response(403, "admin actions are off (start the server with an admin token)", None);
    };
    match bearer(req, token) {
        None => return error_response(401, "admin actions need Authorization: Bearer <admin token>", None),
        Some(false) => return error_response(403, "wrong admin token", None),
        Some(true) => {}
    }
    if *req.method() != Method::POST {
        return error_response(405, "admin actions are POST requests", None);
    }
    let revision = query_u64(req.uri().query().unwrap_or(""), "revision");
    let parts: Vec<&str> = action.split('/').collect();
    let name = match parts[..] {
        ["subscriptions", name, _] => match decode_component(name) {
            Some(n) => n,
            None => return error_response(400, "malformed percent-escape in the path", None),
        },
        _ => Vec::new(),
    };
    let done = match (&parts[..], revision) {
        (["compact"], Some(rev)) => {
            blocking(sh, move |s| {
                s.compact(rev).map(|dropped| json!({"compacted_to": rev, "dropped": dropped}))
            })
            .await
        }
        (["subscriptions", _, "replay"], _) => {
            blocking(sh, move |s| s.subscription_replay_parked(&name).map(|n| json!({"replayed": n}))).await
        }
        (["subscriptions", _, "reset"], Some(rev)) => {
            blocking(sh, move |s| {
                s.subscription_reset(&name, rev).map(|at| json!({"reset_to": rev, "revision": at}))
            })
            .await
        }
        (["compact"] | ["subscriptions", _, "reset"], None) => {
            return error_response(400, "this action needs ?revision=N", None)
        }
        _ => {
            return error_response(
                404,
                "no such admin action (compact, subscriptions/<name>/replay, subscriptions/<name>/reset)",
                None,
            )
        }
    };
    match done {
        Ok(v) => full(Bytes::from(v.to_string()), "application/json"),
        Err(e) => core_error(&e),
    }
}

fn query_u64(query: &str, name: &str) -> Option<u64> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}
