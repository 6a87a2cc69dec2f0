//! Who a request acts as, and whether that user may do what it asks.
//!
//! The transport hands over what it knows ([`Credentials`]: the `token` metadata etcd
//! clients send, the subject CN of a verified client certificate). [`Gate::caller`] turns
//! them into a [`Caller`] against the auth state of the moment; the caller's `require_*`
//! checks then answer with etcd's errors. With auth off every check passes.

use std::sync::Arc;
use std::time::Duration;

use t4_proto::etcdserverpb::request_op::Request;
use t4_proto::etcdserverpb::{Compare, RequestOp, TxnRequest};

use crate::error::{AuthError, Result};

use super::permissions::Access;
use super::state::AuthState;
use super::tokens::Tokens;

/// Password checks (PBKDF2, ~0.1 s of one core each) running at once: the other core keeps
/// serving reads and writes whatever the login load.
pub const LOGIN_VERIFIES_MAX: usize = 1;
/// Logins waiting for or running a password check; past it a login is refused at once with
/// etcd's "too many requests" (a login storm queues no further).
pub const LOGINS_IN_FLIGHT_MAX: usize = 64;

/// Bounds the CPU and the queue that password checks may take.
#[derive(Debug)]
pub struct Logins {
    verifies: tokio::sync::Semaphore,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// A login's place among [`LOGINS_IN_FLIGHT_MAX`]; given back on drop.
pub struct LoginTicket<'a> {
    logins: &'a Logins,
}

impl Logins {
    fn new() -> Self {
        Self { verifies: tokio::sync::Semaphore::new(LOGIN_VERIFIES_MAX), in_flight: Default::default() }
    }

    /// A place for one more login, or `TooManyRequests` when [`LOGINS_IN_FLIGHT_MAX`] are.
    pub fn enter(&self) -> Result<LoginTicket<'_>> {
        use std::sync::atomic::Ordering;
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= LOGINS_IN_FLIGHT_MAX {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(AuthError::TooManyRequests.into());
        }
        Ok(LoginTicket { logins: self })
    }
}

impl LoginTicket<'_> {
    /// Runs `check` (a password verify) once one of [`LOGIN_VERIFIES_MAX`] places is free.
    pub async fn verify(&self, check: impl FnOnce() -> bool + Send + 'static) -> bool {
        let _permit = self.logins.verifies.acquire().await.expect("the semaphore is never closed");
        crate::env::blocking(check).await
    }
}

impl Drop for LoginTicket<'_> {
    fn drop(&mut self) {
        self.logins.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The auth revision a write carries when it was checked with auth off (real auth
/// revisions start at 1): it is refused only if auth was enabled before it is applied.
pub const AUTH_OFF: u64 = 0;

/// What the transport knows of who sent a request.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The `token` gRPC metadata (from Authenticate).
    pub token: Option<String>,
    /// The subject common name of the client certificate, under mutual TLS.
    pub common_name: Option<String>,
}

/// The node's tokens (issued by Authenticate, checked on every request).
#[derive(Debug)]
pub struct Gate {
    pub tokens: Tokens,
    pub logins: Logins,
}

impl Gate {
    /// Tokens living `token_ttl` after their last use (etcd's `--auth-token-ttl`).
    pub fn new(token_ttl: Duration) -> Self {
        Self { tokens: Tokens::new(token_ttl), logins: Logins::new() }
    }

    /// The caller `credentials` identify under `state`. A token is tried first, then the
    /// certificate's CN (etcd's order); a token that is unknown, expired, or older than its
    /// user's password is refused with "invalid auth token", so clients authenticate again.
    pub fn caller(&self, state: Arc<AuthState>, credentials: &Credentials, now: Duration) -> Result<Caller> {
        if !state.enabled {
            return Ok(Caller { state, user: None, stamp: None });
        }
        if let Some(token) = &credentials.token {
            let (user, stamp) = self.tokens.user(token, now).ok_or(AuthError::InvalidToken)?;
            let current = state.users.get(&user).and_then(|found| found.password.as_deref());
            if current != Some(stamp.as_str()) {
                return Err(AuthError::InvalidToken.into());
            }
            return Ok(Caller { state, user: Some(user), stamp: Some(stamp) });
        }
        let user = credentials.common_name.clone().filter(|name| !name.is_empty());
        Ok(Caller { state, user, stamp: None })
    }
}

/// A request's sender, checked against one auth state.
#[derive(Debug, Clone)]
pub struct Caller {
    state: Arc<AuthState>,
    user: Option<String>,
    /// The user's password hash when a token identified it (a password change ends it).
    stamp: Option<String>,
}

impl Caller {
    /// The same sender under a newer auth state, for a long-lived request (a watch) to be
    /// checked again: a token-identified user whose password changed, or who was deleted,
    /// is refused as a dead token would be.
    pub fn under(&self, state: Arc<AuthState>) -> Result<Caller> {
        if let (Some(user), Some(stamp)) = (&self.user, &self.stamp) {
            let current = state.users.get(user).and_then(|found| found.password.as_deref());
            if state.enabled && current != Some(stamp.as_str()) {
                return Err(AuthError::InvalidToken.into());
            }
        }
        Ok(Caller { state, user: self.user.clone(), stamp: self.stamp.clone() })
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn state(&self) -> &AuthState {
        &self.state
    }

    /// What the caller's checks were made under, for a write to carry: the auth revision,
    /// or [`AUTH_OFF`]. A write checked under rules that changed before it is applied is
    /// refused (see `Node::write_checked`).
    pub fn auth_revision(&self) -> Option<u64> {
        Some(if self.state.enabled { self.state.revision } else { AUTH_OFF })
    }

    /// Whether auth is on for this caller's checks.
    pub fn auth_enabled(&self) -> bool {
        self.state.enabled
    }

    /// Some authenticated user (any).
    pub fn require_user(&self) -> Result<()> {
        if self.state.enabled && self.user.is_none() {
            return Err(AuthError::UserEmpty.into());
        }
        Ok(())
    }

    /// `access` to every key of `key`/`range_end`.
    pub fn require(&self, access: Access, key: &[u8], range_end: &[u8]) -> Result<()> {
        if !self.state.enabled {
            return Ok(());
        }
        let user = self.user.as_deref().ok_or(AuthError::UserEmpty)?;
        if self.state.allows(user, access, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied.into())
        }
    }

    /// The root role (auth management, maintenance).
    pub fn require_root(&self) -> Result<()> {
        if !self.state.enabled {
            return Ok(());
        }
        let user = self.user.as_deref().ok_or(AuthError::UserEmpty)?;
        if self.state.is_root(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied.into())
        }
    }

    /// Root, or the user `name` itself (etcd lets a user read its own entry).
    pub fn require_root_or_user(&self, name: &str) -> Result<()> {
        match self.require_root() {
            Err(_) if self.user.as_deref() == Some(name) => Ok(()),
            outcome => outcome,
        }
    }

    /// Root, or a user holding role `role` (etcd lets a user read its roles).
    pub fn require_root_or_role(&self, role: &str) -> Result<()> {
        match self.require_root() {
            Err(_) if self.user.as_deref().and_then(|user| self.state.users.get(user)).is_some_and(|user| user.roles.contains(role)) => {
                Ok(())
            }
            outcome => outcome,
        }
    }

    /// Every compare of a txn needs read access to its range, every op the access its kind
    /// needs, in both branches and in nested txns: a txn reveals (through its compares and
    /// the branch taken) and may change all of them.
    pub fn require_txn(&self, txn: &TxnRequest) -> Result<()> {
        if !self.state.enabled {
            return Ok(());
        }
        for compare in &txn.compare {
            self.require_compare(compare)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            self.require_op(op)?;
        }
        Ok(())
    }

    fn require_compare(&self, compare: &Compare) -> Result<()> {
        self.require(Access::Read, &compare.key, &compare.range_end)
    }

    fn require_op(&self, op: &RequestOp) -> Result<()> {
        match &op.request {
            Some(Request::RequestRange(range)) => self.require(Access::Read, &range.key, &range.range_end),
            Some(Request::RequestPut(put)) => {
                self.require(Access::Write, &put.key, b"")?;
                if put.prev_kv {
                    self.require(Access::Read, &put.key, b"")?;
                }
                Ok(())
            }
            Some(Request::RequestDeleteRange(delete)) => {
                self.require(Access::Write, &delete.key, &delete.range_end)?;
                if delete.prev_kv {
                    self.require(Access::Read, &delete.key, &delete.range_end)?;
                }
                Ok(())
            }
            Some(Request::RequestTxn(txn)) => self.require_txn(txn),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use t4_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

    use super::*;
    use crate::auth::permissions::Permission;
    use crate::auth::state::{AuthChange, ROOT};
    use crate::error::Error;

    const NOW: Duration = Duration::from_secs(100);

    fn state() -> AuthState {
        let mut state = AuthState::default();
        for change in [
            AuthChange::UserAdd { name: ROOT.into(), password: Some("root-hash".into()) },
            AuthChange::UserGrantRole { name: ROOT.into(), role: ROOT.into() },
            AuthChange::UserAdd { name: "alice".into(), password: Some("alice-hash".into()) },
            AuthChange::RoleAdd { name: "app".into() },
            AuthChange::RoleGrantPermission {
                name: "app".into(),
                permission: Permission { access: Access::ReadWrite, key: b"/app/".to_vec(), range_end: b"/app0".to_vec() },
            },
            AuthChange::RoleGrantPermission {
                name: "app".into(),
                permission: Permission { access: Access::Read, key: b"/shared".to_vec(), range_end: Vec::new() },
            },
            AuthChange::UserGrantRole { name: "alice".into(), role: "app".into() },
            AuthChange::Enable,
        ] {
            state.apply(&change).unwrap();
        }
        state
    }

    fn denied(outcome: Result<()>) -> bool {
        outcome == Err(Error::Auth(AuthError::PermissionDenied))
    }

    fn put(key: &str, prev_kv: bool) -> RequestOp {
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: key.into(), prev_kv, ..Default::default() })) }
    }

    #[test]
    fn tokens_and_certificates_identify_callers() {
        let gate = Gate::new(Duration::from_secs(300));
        let state = Arc::new(state());
        let token = gate.tokens.issue("alice", "alice-hash", NOW);
        let with_token = Credentials { token: Some(token.clone()), common_name: Some("root".into()) };
        assert_eq!(gate.caller(state.clone(), &with_token, NOW).unwrap().user(), Some("alice"), "a token wins over the CN");
        let by_cn = Credentials { token: None, common_name: Some("root".into()) };
        assert!(gate.caller(state.clone(), &by_cn, NOW).unwrap().require_root().is_ok());
        let made_up = Credentials { token: Some("nope".into()), common_name: None };
        assert_eq!(gate.caller(state.clone(), &made_up, NOW).unwrap_err(), Error::Auth(AuthError::InvalidToken));
        // A password change (anywhere in the log) outdates the token.
        let mut changed = (*state).clone();
        changed.apply(&AuthChange::UserChangePassword { name: "alice".into(), password: "new-hash".into() }).unwrap();
        assert_eq!(gate.caller(Arc::new(changed), &with_token, NOW).unwrap_err(), Error::Auth(AuthError::InvalidToken));
        let anonymous = gate.caller(state.clone(), &Credentials::default(), NOW).unwrap();
        assert_eq!(anonymous.require(Access::Read, b"/app/x", b""), Err(Error::Auth(AuthError::UserEmpty)));
        assert_eq!(anonymous.require_user(), Err(Error::Auth(AuthError::UserEmpty)));
        // With auth off, nothing is checked and tokens are not looked at.
        let off = gate.caller(Arc::new(AuthState::default()), &made_up, NOW).unwrap();
        assert!(off.require_root().is_ok() && off.auth_revision() == Some(AUTH_OFF));
    }

    #[test]
    fn every_part_of_a_txn_is_checked() {
        let gate = Gate::new(Duration::from_secs(300));
        let token = gate.tokens.issue("alice", "alice-hash", NOW);
        let alice = gate.caller(Arc::new(state()), &Credentials { token: Some(token), common_name: None }, NOW).unwrap();
        assert_eq!(alice.auth_revision(), Some(alice.state().revision));
        assert!(alice.require(Access::Write, b"/app/a", b"/app/z").is_ok());
        assert!(denied(alice.require(Access::Write, b"/shared", b"")));
        assert!(denied(alice.require_root()));
        assert!(alice.require_root_or_user("alice").is_ok() && denied(alice.require_root_or_user("root")));
        assert!(alice.require_root_or_role("app").is_ok() && denied(alice.require_root_or_role("other")));
        let txn = |compare: &str, success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
            compare: vec![Compare { key: compare.into(), ..Default::default() }],
            success,
            failure,
        };
        assert!(alice.require_txn(&txn("/shared", vec![put("/app/a", true)], vec![])).is_ok());
        assert!(denied(alice.require_txn(&txn("/secret", vec![], vec![]))), "a compare reads");
        assert!(denied(alice.require_txn(&txn("/app/a", vec![], vec![put("/shared", false)]))), "the failure branch counts too");
        let range = RequestOp {
            request: Some(Request::RequestRange(RangeRequest { key: b"/app/".to_vec(), range_end: b"/b".to_vec(), ..Default::default() })),
        };
        assert!(denied(alice.require_txn(&txn("/app/a", vec![range], vec![]))), "a range past the grant");
        let delete = RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: b"/app/".to_vec(),
                range_end: b"/app0".to_vec(),
                ..Default::default()
            })),
        };
        let nested = RequestOp { request: Some(Request::RequestTxn(txn("/app/x", vec![delete.clone()], vec![put("/other", false)]))) };
        assert!(denied(alice.require_txn(&txn("/app/a", vec![nested], vec![]))), "nested txns are checked whole");
        let nested = RequestOp { request: Some(Request::RequestTxn(txn("/app/x", vec![delete], vec![]))) };
        assert!(alice.require_txn(&txn("/app/a", vec![nested], vec![])).is_ok());
        let forbidden =
            RequestOp { request: Some(Request::RequestDeleteRange(DeleteRangeRequest { key: b"/secret".to_vec(), ..Default::default() })) };
        let nested = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest { compare: Vec::new(), success: vec![forbidden], failure: Vec::new() })),
        };
        let outer = TxnRequest { compare: Vec::new(), success: vec![nested], failure: Vec::new() };
        assert!(denied(alice.require_txn(&outer)), "a nested txn without compares is checked too");
    }
}
