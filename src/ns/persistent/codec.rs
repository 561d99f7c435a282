//! The byte formats of a subscription's definition and parked-event values.

use super::super::subscriptions::{StreamSelector, Streams};
use super::super::{Feature, Fields};
use super::SubscriptionOptions;
use crate::error::{Error, Result};
use crate::event::Event;

/// What a subscription was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub selector: StreamSelector,
    pub options: SubscriptionOptions,
}

impl Definition {
    pub(crate) fn validate(&self) -> Result<()> {
        self.selector.validate()?;
        let o = &self.options;
        if o.max_in_flight == 0 || o.max_retry == 0 || o.message_timeout_ms == 0 {
            return Err(Error::InvalidArgument(
                "max_in_flight, max_retry and message_timeout_ms must be 1 or more".into(),
            ));
        }
        Ok(())
    }

    /// `streams kind u8` (0 one, 1 prefix, 2 all), `name` (u32 length + bytes), `has type u8`,
    /// `type` (u32 length + bytes), `max_in_flight u32`, `message_timeout_ms u64`,
    /// `max_retry u32`, `pinned u8`; big-endian.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        let (kind, name): (u8, &[u8]) = match &self.selector.streams {
            Streams::One(n) => (0, n),
            Streams::Prefix(p) => (1, p),
            Streams::All => (2, b""),
        };
        buf.push(kind);
        put_bytes(buf, name);
        buf.push(u8::from(self.selector.event_type.is_some()));
        put_bytes(buf, self.selector.event_type.as_deref().unwrap_or_default());
        let o = &self.options;
        buf.extend_from_slice(&o.max_in_flight.to_be_bytes());
        buf.extend_from_slice(&o.message_timeout_ms.to_be_bytes());
        buf.extend_from_slice(&o.max_retry.to_be_bytes());
        buf.push(u8::from(o.pinned));
    }

    pub(crate) fn decode(mut v: &[u8]) -> Option<Definition> {
        let kind = take::<1>(&mut v)?[0];
        let name = take_bytes(&mut v)?.to_vec();
        let has_type = take::<1>(&mut v)?[0] == 1;
        let event_type = take_bytes(&mut v)?.to_vec();
        let streams = match kind {
            0 => Streams::One(name),
            1 => Streams::Prefix(name),
            2 => Streams::All,
            _ => return None,
        };
        let options = SubscriptionOptions {
            max_in_flight: u32::from_be_bytes(take(&mut v)?),
            message_timeout_ms: u64::from_be_bytes(take(&mut v)?),
            max_retry: u32::from_be_bytes(take(&mut v)?),
            pinned: take::<1>(&mut v)?[0] == 1,
        };
        let selector = StreamSelector { streams, event_type: has_type.then_some(event_type) };
        Some(Definition { selector, options })
    }
}

/// A parked key's value: `deliveries u32`, `version u64`, then the stream name.
pub(crate) fn parked_value(buf: &mut Vec<u8>, deliveries: u32, version: u64, stream: &[u8]) {
    buf.extend_from_slice(&deliveries.to_be_bytes());
    buf.extend_from_slice(&version.to_be_bytes());
    buf.extend_from_slice(stream);
}

/// The stream, version and delivery count of a parked key's event.
pub(crate) fn parked_of(e: &Event) -> Option<(Vec<u8>, u64, u32)> {
    Fields::of(&e.key, Feature::Subscriptions)?.tag(b"p")?;
    let mut v = &e.value[..];
    let deliveries = u32::from_be_bytes(take(&mut v)?);
    let version = u64::from_be_bytes(take(&mut v)?);
    Some((v.to_vec(), version, deliveries))
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
    buf.extend_from_slice(b);
}

fn take<const N: usize>(v: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = v.split_first_chunk::<N>()?;
    *v = rest;
    Some(*head)
}

fn take_bytes<'a>(v: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(take(v)?) as usize;
    let (b, rest) = v.split_at_checked(len)?;
    *v = rest;
    Some(b)
}
