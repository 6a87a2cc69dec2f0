//! Watch: one hub fed once per committed batch; each watcher holds a cursor and a span.
//!
//! The hub keeps the events of recent revisions in a bounded ring. A watcher whose cursor
//! lies in the ring reads from it; one that is further behind (a start revision in the past,
//! or a slow consumer) reads history from the store in bounded steps, then joins the ring.
//! Writers never wait for watchers: the hub only appends and trims. A watcher that needs
//! history below the compaction point gets `Compacted` (etcd cancels such a watch).
//!
//! Guarantees per watcher: revisions in increasing order, each revision whole, no
//! duplicates, no gaps against the committed log, nothing above the visible revision.

mod hub;
mod stream;

pub use hub::{WatchHub, RING_BYTES_MAX};
pub use stream::{WatchOptions, WatchStream};
