//! Leadership on the bucket's `lock` object (docs/design.md §5): the lock record, a pure
//! engine that decides (events in, commands out: [`engine`]) and the driver that carries its
//! commands out against the bucket and the clock ([`driver`]).
//!
//! Today one node takes a term at open and watches the lock while it serves; clustering
//! (issue 17) puts lease timing and followers into the same engine.

pub mod driver;
pub mod engine;
pub mod lock;

pub use engine::{Command, Election, Event, WriteOutcome};
pub use lock::{read_lock, LockRecord};
