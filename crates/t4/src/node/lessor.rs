//! When leases expire: in memory, on the node's monotonic clock.
//!
//! Which leases exist and their granted TTLs are in the store (written through the log like
//! data); when each expires is not: keepalives touch only this table, so they spend no
//! revision and write nothing. A node that opens gives every lease its full TTL again from
//! the moment it opens, as etcd does after a restart or a leader change: a lease is never
//! shortened, so no key expires before its TTL counted from the client's last keepalive.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Deadline {
    ttl: i64,
    expires: Duration,
}

/// Lease id -> (granted TTL, expiry on the monotonic clock).
#[derive(Debug, Default)]
pub struct Lessor {
    leases: Mutex<BTreeMap<i64, Deadline>>,
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    /// The store's leases, each with its whole TTL from `now`.
    pub fn load(leases: &[(i64, i64)], now: Duration) -> Self {
        let table = leases.iter().map(|&(id, ttl)| (id, Deadline { ttl, expires: now + seconds(ttl) })).collect();
        Self { leases: Mutex::new(table) }
    }

    /// Replaces every lease with the store's, each with its whole TTL from `now` (after the
    /// store was reset: a deposed leader's grants no majority took are gone).
    pub fn reload(&self, leases: &[(i64, i64)], now: Duration) {
        *self.table() = Self::load(leases, now).leases.into_inner().expect("fresh lock");
    }

    pub fn granted(&self, id: i64, ttl: i64, now: Duration) {
        self.table().insert(id, Deadline { ttl, expires: now + seconds(ttl) });
    }

    pub fn revoked(&self, id: i64) {
        self.table().remove(&id);
    }

    /// Renews `id` for its whole TTL; `None` if it does not exist or has already expired
    /// (its revocation is on its way).
    pub fn keep_alive(&self, id: i64, now: Duration) -> Option<i64> {
        let mut table = self.table();
        let deadline = table.get_mut(&id).filter(|deadline| deadline.expires > now)?;
        deadline.expires = now + seconds(deadline.ttl);
        Some(deadline.ttl)
    }

    /// (granted TTL, whole seconds left) of `id`, `None` if it does not exist. Seconds left
    /// are rounded down, as etcd reports them.
    pub fn remaining(&self, id: i64, now: Duration) -> Option<(i64, i64)> {
        let table = self.table();
        let deadline = table.get(&id)?;
        Some((deadline.ttl, deadline.expires.saturating_sub(now).as_secs() as i64))
    }

    /// Leases whose time is up at `now`.
    pub fn expired(&self, now: Duration) -> Vec<i64> {
        self.table().iter().filter(|(_, deadline)| deadline.expires <= now).map(|(id, _)| *id).collect()
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn ids(&self) -> Vec<i64> {
        self.table().keys().copied().collect()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Deadline>> {
        self.leases.lock().expect("lessor lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_renew_expiry_passes_and_a_reload_restarts_every_ttl() {
        let at = Duration::from_secs;
        let lessor = Lessor::load(&[(1, 10), (2, 5)], at(100));
        assert_eq!(lessor.remaining(1, at(100)), Some((10, 10)));
        assert_eq!(lessor.expired(at(104)), Vec::<i64>::new());
        assert_eq!(lessor.keep_alive(2, at(104)), Some(5));
        assert_eq!(lessor.expired(at(108)), Vec::<i64>::new(), "renewed at 104 for 5 s");
        assert_eq!(lessor.expired(at(109)), vec![2]);
        assert_eq!(lessor.keep_alive(2, at(109)), None, "an expired lease is not renewed");
        assert_eq!(lessor.expired(at(110)), vec![1, 2]);
        lessor.revoked(2);
        lessor.granted(3, 2, at(110));
        assert_eq!(lessor.ids(), vec![1, 3]);
        assert_eq!(lessor.remaining(3, Duration::from_millis(110_500)), Some((2, 1)), "rounded down");
        assert_eq!(lessor.remaining(2, at(110)), None);
        // After a restart every lease gets its whole TTL again.
        let reloaded = Lessor::load(&[(1, 10)], at(500));
        assert_eq!(reloaded.remaining(1, at(500)), Some((10, 10)));
    }
}
