//! Simple tokens (etcd's `--auth-token=simple`): random strings handed out by Authenticate,
//! valid for a TTL that every use renews, dropped when their user's password changes or the
//! user is deleted. Failed logins are rate-limited per user: after
//! [`FAILURES_BEFORE_BACKOFF`] in a row, each further attempt must wait a doubling delay.
//! Times are the node clock's monotonic readings (the Clock seam).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Failed logins of one user allowed in a row before attempts are slowed down.
pub const FAILURES_BEFORE_BACKOFF: u32 = 5;
/// The longest wait imposed between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

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
}

#[derive(Debug, Default)]
struct State {
    tokens: BTreeMap<String, Token>,
    failures: BTreeMap<String, Failures>,
    issued: u64,
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

    /// Ok if `user` may try to log in now; else how long it must wait.
    pub fn may_try(&self, user: &str, now: Duration) -> Result<(), Duration> {
        match self.state().failures.get(user) {
            Some(failures) if failures.next_attempt > now => Err(failures.next_attempt - now),
            _ => Ok(()),
        }
    }

    /// Records a failed login of `user`: past the allowance, the next attempt waits 1 s,
    /// then 2 s, 4 s, ... up to [`BACKOFF_MAX`].
    pub fn failed(&self, user: &str, now: Duration) {
        let mut state = self.state();
        let failures = state.failures.entry(user.to_string()).or_default();
        failures.count += 1;
        if failures.count >= FAILURES_BEFORE_BACKOFF {
            let doublings = (failures.count - FAILURES_BEFORE_BACKOFF).min(6);
            failures.next_attempt = now + Duration::from_secs(1 << doublings).min(BACKOFF_MAX);
        }
    }

    /// A successful login clears the user's failures.
    pub fn succeeded(&self, user: &str) {
        self.state().failures.remove(user);
    }

    /// Drops expired tokens (called now and then so abandoned ones do not pile up).
    pub fn sweep(&self, now: Duration) {
        self.state().tokens.retain(|_, token| token.expires > now);
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
            tokens.failed("root", S(attempt as u64));
            assert!(tokens.may_try("root", S(attempt as u64)).is_ok());
        }
        tokens.failed("root", S(10));
        assert_eq!(tokens.may_try("root", S(10)), Err(S(1)));
        assert!(tokens.may_try("root", S(11)).is_ok());
        tokens.failed("root", S(11));
        assert_eq!(tokens.may_try("root", S(11)), Err(S(2)), "the wait doubles");
        assert!(tokens.may_try("alice", S(11)).is_ok(), "per user");
        for _ in 0..20 {
            tokens.failed("root", S(20));
        }
        assert_eq!(tokens.may_try("root", S(20)), Err(BACKOFF_MAX));
        tokens.succeeded("root");
        assert!(tokens.may_try("root", S(20)).is_ok());
    }
}
