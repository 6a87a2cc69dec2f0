//! Leadership and fencing in the bucket (docs/design.md §5): the `lock` record ([`lock`]), a
//! pure engine that decides (events in, commands out: [`engine`]), the driver that carries
//! its commands out against the bucket and the clock ([`driver`]), and the two other fences
//! a term writes: seals that end an older term's log ([`seal`]) and floors that mark where
//! a collected log starts ([`floor`]).
//!
//! Today one node takes a term at open and watches the lock while it serves; clustering
//! (issue 17) puts lease timing and followers into the same engine.

pub mod driver;
pub mod engine;
pub mod floor;
pub mod lock;
pub mod member;
pub mod seal;

pub use engine::{Command, Election, Event, Identity, LeaseTiming, WriteOutcome};
pub use lock::{read_lock, LockRecord};
