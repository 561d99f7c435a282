//! What the server sends: response bodies (`Payload`), the write timeout on every
//! connection, and the JSON error responses.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::lockstep::http::Io;

/// Fails a write that has made no progress for `limit` (a client that takes no bytes), so
/// the connection is dropped as documented instead of after the kernel's own timeout.
pub(super) struct WriteTimeout {
    inner: Box<dyn Io>,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteTimeout {
    pub(super) fn new(inner: Box<dyn Io>, limit: Duration) -> WriteTimeout {
        WriteTimeout { inner, limit, stalled: None }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client took no bytes")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body: all at once, or chunks from a producer task (bounded channel).
pub(super) enum Payload {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Payload::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Payload::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Payload::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Payload::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Payload::Stream(_) => SizeHint::default(),
        }
    }
}

pub(super) fn error_response(status: u16, message: &str, extra: Option<Value>) -> Response<Payload> {
    let mut v = json!({"error": message, "status": status});
    if let (Some(Value::Object(extra)), Value::Object(map)) = (extra, &mut v) {
        map.extend(extra);
    }
    let mut body = serde_json::to_vec(&v).expect("JSON");
    body.push(b'\n');
    let mut r = Response::new(Payload::Full(Some(Bytes::from(body))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match status {
        401 => {
            h.insert("WWW-Authenticate", HeaderValue::from_static("Bearer"));
        }
        405 => {
            h.insert("Allow", HeaderValue::from_static("GET, HEAD, PUT, DELETE"));
        }
        503 => {
            h.insert("Retry-After", HeaderValue::from_static("1"));
        }
        _ => {}
    }
    r
}

pub(super) fn core_error(e: &Error) -> Response<Payload> {
    let status = match e {
        Error::InvalidArgument(_) => 400,
        Error::NotFound(_) => 404,
        Error::TooLarge(_) => 413,
        Error::Compacted { .. } | Error::FutureRevision { .. } => 410,
        Error::Closed => 503,
        _ => 500,
    };
    error_response(status, &e.to_string(), None)
}
