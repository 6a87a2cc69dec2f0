//! t4-check: what the simulator and the Jepsen-style harness share. A [`history`] records
//! what each client asked, when, and what it was told; [`checker`] replays the committed log
//! on a sequential model and judges the history against it (strict serializability, watches,
//! lease pairs, the bucket's terms); [`wgl`] searches each key's history for a
//! linearization independently of the log. Nothing here needs madsim or a runtime: a
//! history from simulated clients and one from real processes are judged alike.

pub mod checker;
pub mod history;
pub mod wgl;
