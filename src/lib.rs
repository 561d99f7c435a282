//! tidemark: an embeddable change-feed engine. One revision log per store, the key state
//! derived from it, and a watch registry that pushes or hands out every change from any
//! revision on, with no gaps, no duplicates and bounded memory. The safe core lives here;
//! `ffi` is the C ABI over it.
#![deny(unsafe_code)]

mod error;
mod event;
pub mod ffi;
mod kv;
#[cfg(feature = "http")]
pub mod lockstep;
mod metrics;
mod ns;
mod op;
mod options;
mod selector;
pub mod storage;
mod store;
mod watch;

pub use error::{Error, IoError, Result};
pub use event::{Bytes, Event, EventKind};
pub use kv::Entry;
pub use ns::contexts::{
    Cleaned, Context, Delta as ContextDelta, Exporter as ContextExporter, Order, Provider as ContextProvider,
    Restored, Sync as ContextSync, Written,
};
pub use ns::persistent::{
    Consumer, Definition, Delivery, Nack, Parked, Start, SubscriptionInfo, SubscriptionOptions,
};
pub use ns::snapshots::Snapshot;
pub use ns::streams::{
    new_event_id, Appended, Direction, ExpectedVersion, NewEvent, StreamEvent, StreamPage, MAX_NAME,
};
pub use ns::subscriptions::{
    StreamSelector, Streams, SubscriptionCallback, SubscriptionEvent, SubscriptionFeed,
};
pub use ns::trackers::{Action, Handler as TrackerHandler, Notification};
pub use ns::{decode as decode_feature_event, FeatureEvent};
pub use op::Op;
pub use options::{Options, SyncPolicy};
pub use selector::{prefix_end, Selector};
pub use storage::TailRepair;
pub use store::{Changes, Clock, Store, DEFAULT_LIMIT};
pub use watch::{Callback, PullWatch, WatchOptions, DEFAULT_MAX_QUEUE};
