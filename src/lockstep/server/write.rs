//! Write-through requests (`PUT` / `DELETE` on a writable server).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};

use super::body::{core_error, error_response, Payload};
use super::Shared;
use crate::lockstep::http::decode_component;
use crate::lockstep::record;
use crate::store::Store;

pub(super) async fn write_through(sh: &Arc<Shared>, req: Request<Incoming>) -> Response<Payload> {
    let Some(key) = decode_component(req.uri().path()) else {
        return error_response(400, "malformed percent-escape in the path", None);
    };
    let slash = key.iter().rposition(|&b| b == b'/').unwrap_or(0);
    let id = key[slash + 1..].to_vec();
    if id.is_empty() {
        return error_response(400, "the path must name a record: /<path>/<id>", None);
    }
    let Ok(_slot) = sh.finite.clone().try_acquire_owned() else {
        sh.refused.fetch_add(1, Ordering::Relaxed);
        return error_response(503, "too many requests (max_connections)", None);
    };
    let put = req.method() == Method::PUT;
    let body = if put {
        let max = sh.opts.max_body_bytes;
        if req.body().size_hint().lower() > max as u64 {
            return error_response(413, &format!("request body exceeds {max} bytes"), None);
        }
        let limited = http_body_util::Limited::new(req.into_body(), max);
        match tokio::time::timeout(Duration::from_millis(sh.opts.request_timeout_ms), limited.collect()).await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return error_response(413, &format!("request body exceeds {max} bytes"), None)
            }
            Ok(Err(_)) => return error_response(400, "the request body was cut short", None),
            Err(_) => return error_response(408, "request body not received in time", None),
        }
    } else {
        Bytes::new()
    };
    if put && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return error_response(400, "the body must be a JSON document", None);
    }
    let blocking_sh = sh.clone();
    // A durable store may wait for the disk: not on the runtime's threads.
    let written = tokio::task::spawn_blocking(move || {
        let store: &Store = &blocking_sh.store;
        if put {
            store.put(&key, &body).map(|rev| (rev, None))
        } else {
            store.delete(&key).map(|rev| (rev, Some(rev)))
        }
    })
    .await;
    match written {
        Ok(Ok((rev, deleted_at))) => {
            let mut body = Vec::new();
            record::write_record(&mut body, &id, rev, deleted_at, None);
            let mut r = Response::new(Payload::Full(Some(Bytes::from(body))));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Ok(Err(e)) => core_error(&e),
        Err(_) => error_response(500, "the write could not be done", None),
    }
}
