//! Authentication and RBAC with etcd's semantics (docs/auth.md).
//!
//! - [`state`]: users, roles and whether auth is on, changed through the log like data.
//! - [`password`]: slow password hashes.
//! - [`permissions`]: whether a user's grants cover a request's whole key range.
//! - [`tokens`]: simple tokens with a TTL, and login rate limiting.
//! - [`gate`]: who a request acts as, and the checks each RPC makes.

pub mod gate;
pub mod password;
pub mod permissions;
pub mod state;
pub mod tokens;
