//! Simple tokens (etcd's `--auth-token=simple`): random strings handed out by Authenticate,
//! valid for a TTL that every use renews, dropped when their user's password changes or the
//! user is deleted. Failed logins are rate-limited per user name (known or not, so the limit
//! tells nothing about which users exist): after [`FAILURES_BEFORE_BACKOFF`] in a row, each
//! further attempt must wait a doubling delay. An attempt counts as a failure from the moment
//! it is let through ([`Tokens::reserve`]) until its password checks out, so concurrent
//! attempts cannot all pass the check before any failure is recorded. Both maps are bounded
//! ([`TOKENS_MAX`], [`FAILURE_RECORDS_MAX`]) and swept of what has expired.
//! Times are the node clock's monotonic readings (the Clock seam).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Failed logins of one user allowed in a row before attempts are slowed down.
pub const FAILURES_BEFORE_BACKOFF: u32 = 5;
/// The longest wait imposed between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Most live tokens; past it the one closest to expiry is dropped for a new one.
pub const TOKENS_MAX: usize = 100_000;
/// Most user names with failures on record; past it, once nothing can be swept, logins of
/// names without a record are refused as too many requests.
pub const FAILURE_RECORDS_MAX: usize = 10_000;
/// Tokens issued between two sweeps of expired tokens and failure records.
const SWEEP_EVERY_ISSUES: u64 = 256;

#[derive(Debug)]
struct Token {
    user: String,
    /// The user's password hash when the token was issued: a token outlives no password
    /// change, wherever in the log the change came from.
    stamp: String,
    expires: Duration,
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    next_attempt: Duration,
    /// When the last failure (or reserved attempt) was recorded: a record older than
    /// [`BACKOFF_MAX`] whose wait is over can be swept.
    last: Duration,
}

#[derive(Debug, Default)]
struct State {
    tokens: BTreeMap<String, Token>,
    failures: BTreeMap<String, Failures>,
    issued: u64,
}

impl Failures {
    fn record(&mut self, now: Duration) {
        self.count += 1;
        self.last = now;
        if self.count >= FAILURES_BEFORE_BACKOFF {
            let doublings = (self.count - FAILURES_BEFORE_BACKOFF).min(6);
            self.next_attempt = now + Duration::from_secs(1 << doublings).min(BACKOFF_MAX);
        }
    }
}

impl State {
    fn sweep(&mut self, now: Duration) {
        self.tokens.retain(|_, token| token.expires > now);
        self.failures.retain(|_, failures| failures.next_attempt > now || now.saturating_sub(failures.last) < BACKOFF_MAX);
    }
}

/// The node's tokens and login failures.
#[derive(Debug)]
pub struct Tokens {
    ttl: Duration,
    state: Mutex<State>,
}

impl Tokens {
    /// Tokens that live `ttl` after their last use (`--token-ttl`, etcd's default 300 s).
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, state: Mutex::default() }
    }

    /// A new token for `user`, whose password hash is `stamp` (after its password was
    /// checked).
    pub fn issue(&self, user: &str, stamp: &str, now: Duration) -> String {
        let random = crate::env::os_random(16).expect("the OS random source works");
        let mut state = self.state();
        state.issued += 1;
        if state.issued.is_multiple_of(SWEEP_EVERY_ISSUES) || state.tokens.len() >= TOKENS_MAX {
            state.sweep(now);
        }
        if state.tokens.len() >= TOKENS_MAX {
            let soonest = state.tokens.iter().min_by_key(|(_, token)| token.expires).map(|(name, _)| name.clone());
            state.tokens.remove(&soonest.expect("the map is full"));
        }
        // etcd's simple tokens look like `<random>.<index>`; clients treat them as opaque.
        let token = format!("{}.{}", random.iter().map(|byte| format!("{byte:02x}")).collect::<String>(), state.issued);
        state.tokens.insert(token.clone(), Token { user: user.to_string(), stamp: stamp.to_string(), expires: now + self.ttl });
        token
    }

    /// The user a live token belongs to and the password hash it was issued under
    /// (renewing it), or `None` for an unknown or expired token.
    pub fn user(&self, token: &str, now: Duration) -> Option<(String, String)> {
        let mut state = self.state();
        let live = state.tokens.get(token).is_some_and(|found| found.expires > now);
        if !live {
            state.tokens.remove(token);
            return None;
        }
        let found = state.tokens.get_mut(token).expect("checked above");
        found.expires = now + self.ttl;
        Some((found.user.clone(), found.stamp.clone()))
    }

    /// Drops every token of `user` (its password changed, or it was deleted).
    pub fn revoke_user(&self, user: &str) {
        self.state().tokens.retain(|_, token| token.user != user);
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        self.state().tokens.clear();
    }

    /// Lets one login attempt of `user` through, counting it as a failure until
    /// [`Tokens::succeeded`] clears it; or refuses it with how long to wait (a zero wait: too
    /// many names on record, try later).
    pub fn reserve(&self, user: &str, now: Duration) -> Result<(), Duration> {
        let mut state = self.state();
        if let Some(failures) = state.failures.get(user) {
            if failures.next_attempt > now {
                return Err(failures.next_attempt - now);
            }
        } else if state.failures.len() >= FAILURE_RECORDS_MAX {
            state.sweep(now);
            if state.failures.len() >= FAILURE_RECORDS_MAX {
                return Err(Duration::ZERO);
            }
        }
        state.failures.entry(user.to_string()).or_default().record(now);
        Ok(())
    }

    /// Records a failed login of `user` that was not reserved: past the allowance, the next
    /// attempt waits 1 s, then 2 s, 4 s, ... up to [`BACKOFF_MAX`].
    #[cfg(test)]
    pub fn failed(&self, user: &str, now: Duration) {
        self.state().failures.entry(user.to_string()).or_default().record(now);
    }

    /// A successful login clears the user's failures.
    pub fn succeeded(&self, user: &str) {
        self.state().failures.remove(user);
    }

    /// Drops expired tokens and failure records whose wait is long over.
    pub fn sweep(&self, now: Duration) {
        self.state().sweep(now);
    }

    /// Live tokens and failure records (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.tokens.len(), state.failures.len())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("tokens lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn tokens_expire_unless_used_and_die_with_their_users_password() {
        let tokens = Tokens::new(S(300));
        let alice = tokens.issue("alice", "h1", S(0));
        let bob = tokens.issue("bob", "h2", S(0));
        assert_ne!(alice, bob);
        let user = |token: &str, at| tokens.user(token, at).map(|(user, stamp)| format!("{user}/{stamp}"));
        assert_eq!(user(&alice, S(299)).as_deref(), Some("alice/h1"));
        assert_eq!(user(&alice, S(598)).as_deref(), Some("alice/h1"), "each use renews the TTL");
        assert_eq!(tokens.user(&bob, S(300)), None, "unused for its TTL: expired");
        assert_eq!(tokens.user("made-up", S(1)), None);
        let again = tokens.issue("alice", "h1", S(600));
        tokens.revoke_user("alice");
        assert_eq!(tokens.user(&alice, S(601)), None);
        assert_eq!(tokens.user(&again, S(601)), None);
        let carol = tokens.issue("carol", "h3", S(700));
        tokens.sweep(S(1001));
        assert_eq!(tokens.user(&carol, S(700)), None, "swept once expired");
    }

    #[test]
    fn repeated_failed_logins_are_slowed_down_and_a_success_resets() {
        let tokens = Tokens::new(S(300));
        for attempt in 0..FAILURES_BEFORE_BACKOFF - 1 {
            assert!(tokens.reserve("root", S(attempt as u64)).is_ok());
        }
        assert!(tokens.reserve("root", S(10)).is_ok(), "the fifth attempt goes through");
        assert_eq!(tokens.reserve("root", S(10)), Err(S(1)), "and sets the wait");
        assert!(tokens.reserve("root", S(11)).is_ok());
        assert_eq!(tokens.reserve("root", S(11)), Err(S(2)), "the wait doubles");
        assert!(tokens.reserve("alice", S(11)).is_ok(), "per user");
        for _ in 0..20 {
            tokens.failed("root", S(20));
        }
        assert_eq!(tokens.reserve("root", S(20)), Err(BACKOFF_MAX));
        tokens.succeeded("root");
        assert!(tokens.reserve("root", S(20)).is_ok());
    }

    #[test]
    fn concurrent_attempts_are_counted_before_they_are_checked() {
        let tokens = Tokens::new(S(300));
        let passed = (0..1000).filter(|_| tokens.reserve("root", S(5)).is_ok()).count();
        assert_eq!(passed, FAILURES_BEFORE_BACKOFF as usize, "no attempt has finished, yet only the allowance got through");
    }

    #[test]
    fn failure_records_and_tokens_are_bounded_and_swept() {
        let tokens = Tokens::new(S(300));
        for name in 0..FAILURE_RECORDS_MAX {
            assert!(tokens.reserve(&format!("u{name}"), S(1)).is_ok());
        }
        assert_eq!(tokens.reserve("one-more", S(2)), Err(Duration::ZERO), "full, and nothing to sweep yet");
        assert!(tokens.reserve("u7", S(2)).is_ok(), "names on record go on as before");
        assert!(tokens.reserve("one-more", S(2) + BACKOFF_MAX).is_ok(), "old records are swept to make room");
        assert_eq!(tokens.counts().1, 1);
        for i in 0..TOKENS_MAX + 10 {
            tokens.issue("alice", "h", S(i as u64 / 1000));
        }
        assert_eq!(tokens.counts().0, TOKENS_MAX);
        tokens.issue("alice", "h", S(10_000));
        assert_eq!(tokens.counts().0, 1, "expired tokens are swept as new ones are issued");
    }
}
