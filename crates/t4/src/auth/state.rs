//! The auth state: whether auth is on, the users (password hash, roles) and the roles (key
//! permissions). It changes only by [`AuthChange`]s in log order: the writer checks and
//! applies each one inside its store transaction, replay applies it again after a crash, and
//! the node's in-memory copy applies the same change with the same [`AuthState::apply`], so
//! every copy agrees. Changes spend no revision; each one that changes something raises
//! the auth revision, as etcd's does.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::AuthError;

use super::permissions::{covers, Access, Permission};

/// The user and the role with every permission.
pub const ROOT: &str = "root";

/// etcd's auth revision before any change.
const FIRST_REVISION: u64 = 1;
const STATE_MAGIC: &[u8; 4] = b"T4AU";
const STATE_VERSION: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// The password hash ([`super::password`]); `None` for a user added without a password,
    /// who can only be identified by a client certificate.
    pub password: Option<String>,
    pub roles: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthState {
    pub enabled: bool,
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    /// Each role's permissions, ordered by (key, range_end).
    pub roles: BTreeMap<String, Vec<Permission>>,
}

impl Default for AuthState {
    fn default() -> Self {
        Self { enabled: false, revision: FIRST_REVISION, users: BTreeMap::new(), roles: BTreeMap::new() }
    }
}

/// One change to the auth state, as the log carries it (passwords already hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChange {
    Enable,
    Disable,
    UserAdd { name: String, password: Option<String> },
    UserDelete { name: String },
    UserChangePassword { name: String, password: String },
    UserGrantRole { name: String, role: String },
    UserRevokeRole { name: String, role: String },
    RoleAdd { name: String },
    RoleDelete { name: String },
    RoleGrantPermission { name: String, permission: Permission },
    RoleRevokePermission { name: String, key: Vec<u8>, range_end: Vec<u8> },
}

impl AuthChange {
    /// The user whose tokens must stop working once this change is applied.
    pub fn invalidates_tokens_of(&self) -> Option<&str> {
        match self {
            AuthChange::UserDelete { name } | AuthChange::UserChangePassword { name, .. } => Some(name),
            _ => None,
        }
    }
}

impl AuthState {
    /// Checks `change` against the state and applies it, with etcd's rules and errors.
    /// Returns whether anything changed (enabling auth twice, or granting a role a user
    /// already has, changes nothing and is not an error). A refused change leaves the state
    /// as it was.
    pub fn apply(&mut self, change: &AuthChange) -> Result<bool, AuthError> {
        match change {
            AuthChange::Enable => {
                if self.enabled {
                    return Ok(false);
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
            }
            AuthChange::Disable => {
                if !self.enabled {
                    return Ok(false);
                }
                self.enabled = false;
            }
            AuthChange::UserAdd { name, password } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserExists);
                }
                self.users.insert(name.clone(), User { password: password.clone(), roles: BTreeSet::new() });
            }
            AuthChange::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidManagement);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
            }
            AuthChange::UserChangePassword { name, password } => {
                self.users.get_mut(name).ok_or(AuthError::UserNotFound)?.password = Some(password.clone());
            }
            AuthChange::UserGrantRole { name, role } => {
                if !self.users.contains_key(name) {
                    return Err(AuthError::UserNotFound);
                }
                // The root role need not exist as a role to be granted (etcd's rule).
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                if !self.users.get_mut(name).expect("checked").roles.insert(role.clone()) {
                    return Ok(false);
                }
            }
            AuthChange::UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT && role == ROOT {
                    return Err(AuthError::InvalidManagement);
                }
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                if !user.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthChange::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleExists);
                }
                self.roles.insert(name.clone(), Vec::new());
            }
            AuthChange::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidManagement);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                // Users lose the role with it (a role added again later grants nothing).
                self.users.values_mut().for_each(|user| {
                    user.roles.remove(name);
                });
            }
            AuthChange::RoleGrantPermission { name, permission } => {
                let permissions = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                let same_range = |held: &Permission| held.key == permission.key && held.range_end == permission.range_end;
                match permissions.iter_mut().find(|held| same_range(held)) {
                    Some(held) => held.access = permission.access,
                    None => {
                        permissions.push(permission.clone());
                        permissions.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
            }
            AuthChange::RoleRevokePermission { name, key, range_end } => {
                let permissions = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                let before = permissions.len();
                permissions.retain(|held| !(held.key == *key && held.range_end == *range_end));
                if permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
        }
        self.revision += 1;
        Ok(true)
    }

    /// Whether `name` is a user holding the root role (every permission, and the right to
    /// manage auth).
    pub fn is_root(&self, name: &str) -> bool {
        self.users.get(name).is_some_and(|user| user.roles.contains(ROOT))
    }

    /// Whether user `name` may have `access` to every key of `key`/`range_end` (etcd's
    /// encoding of a range). Unknown users may do nothing.
    pub fn allows(&self, name: &str, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        let Some(user) = self.users.get(name) else { return false };
        if user.roles.contains(ROOT) {
            return true;
        }
        let granted: Vec<Permission> = user.roles.iter().filter_map(|role| self.roles.get(role)).flatten().cloned().collect();
        covers(&granted, access, key, range_end)
    }

    /// The state as stored (in the store and in checkpoint manifests).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(STATE_MAGIC);
        out.push(STATE_VERSION);
        out.push(u8::from(self.enabled));
        out.extend_from_slice(&self.revision.to_le_bytes());
        put_u32(&mut out, self.users.len());
        for (name, user) in &self.users {
            put_bytes(&mut out, name.as_bytes());
            put_optional(&mut out, user.password.as_deref());
            put_u32(&mut out, user.roles.len());
            for role in &user.roles {
                put_bytes(&mut out, role.as_bytes());
            }
        }
        put_u32(&mut out, self.roles.len());
        for (name, permissions) in &self.roles {
            put_bytes(&mut out, name.as_bytes());
            put_u32(&mut out, permissions.len());
            for permission in permissions {
                put_permission(&mut out, permission);
            }
        }
        out
    }

    /// Decodes what [`AuthState::encode`] wrote; any defect is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(4)? != STATE_MAGIC {
            return Err("not an auth state (bad magic)".into());
        }
        let version = reader.u8()?;
        if version != STATE_VERSION {
            return Err(format!("unknown auth state version {version}"));
        }
        let enabled = match reader.u8()? {
            0 => false,
            1 => true,
            other => return Err(format!("auth enabled flag {other}")),
        };
        let revision = reader.u64()?;
        let mut state = AuthState { enabled, revision, ..AuthState::default() };
        for _ in 0..reader.count()? {
            let name = reader.string()?;
            let password = reader.optional()?;
            let mut roles = BTreeSet::new();
            for _ in 0..reader.count()? {
                roles.insert(reader.string()?);
            }
            state.users.insert(name, User { password, roles });
        }
        for _ in 0..reader.count()? {
            let name = reader.string()?;
            let mut permissions = Vec::new();
            for _ in 0..reader.count()? {
                permissions.push(reader.permission()?);
            }
            state.roles.insert(name, permissions);
        }
        reader.finish()?;
        Ok(state)
    }
}

const CHANGE_ENABLE: u8 = 1;
const CHANGE_DISABLE: u8 = 2;
const CHANGE_USER_ADD: u8 = 3;
const CHANGE_USER_DELETE: u8 = 4;
const CHANGE_USER_PASSWORD: u8 = 5;
const CHANGE_USER_GRANT: u8 = 6;
const CHANGE_USER_REVOKE: u8 = 7;
const CHANGE_ROLE_ADD: u8 = 8;
const CHANGE_ROLE_DELETE: u8 = 9;
const CHANGE_ROLE_GRANT: u8 = 10;
const CHANGE_ROLE_REVOKE: u8 = 11;

impl AuthChange {
    /// The change as a WAL record carries it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            AuthChange::Enable => out.push(CHANGE_ENABLE),
            AuthChange::Disable => out.push(CHANGE_DISABLE),
            AuthChange::UserAdd { name, password } => {
                out.push(CHANGE_USER_ADD);
                put_bytes(&mut out, name.as_bytes());
                put_optional(&mut out, password.as_deref());
            }
            AuthChange::UserDelete { name } => {
                out.push(CHANGE_USER_DELETE);
                put_bytes(&mut out, name.as_bytes());
            }
            AuthChange::UserChangePassword { name, password } => {
                out.push(CHANGE_USER_PASSWORD);
                put_bytes(&mut out, name.as_bytes());
                put_bytes(&mut out, password.as_bytes());
            }
            AuthChange::UserGrantRole { name, role } | AuthChange::UserRevokeRole { name, role } => {
                out.push(if matches!(self, AuthChange::UserGrantRole { .. }) { CHANGE_USER_GRANT } else { CHANGE_USER_REVOKE });
                put_bytes(&mut out, name.as_bytes());
                put_bytes(&mut out, role.as_bytes());
            }
            AuthChange::RoleAdd { name } | AuthChange::RoleDelete { name } => {
                out.push(if matches!(self, AuthChange::RoleAdd { .. }) { CHANGE_ROLE_ADD } else { CHANGE_ROLE_DELETE });
                put_bytes(&mut out, name.as_bytes());
            }
            AuthChange::RoleGrantPermission { name, permission } => {
                out.push(CHANGE_ROLE_GRANT);
                put_bytes(&mut out, name.as_bytes());
                put_permission(&mut out, permission);
            }
            AuthChange::RoleRevokePermission { name, key, range_end } => {
                out.push(CHANGE_ROLE_REVOKE);
                put_bytes(&mut out, name.as_bytes());
                put_bytes(&mut out, key);
                put_bytes(&mut out, range_end);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { bytes, at: 0 };
        let change = match reader.u8()? {
            CHANGE_ENABLE => AuthChange::Enable,
            CHANGE_DISABLE => AuthChange::Disable,
            CHANGE_USER_ADD => AuthChange::UserAdd { name: reader.string()?, password: reader.optional()? },
            CHANGE_USER_DELETE => AuthChange::UserDelete { name: reader.string()? },
            CHANGE_USER_PASSWORD => AuthChange::UserChangePassword { name: reader.string()?, password: reader.string()? },
            CHANGE_USER_GRANT => AuthChange::UserGrantRole { name: reader.string()?, role: reader.string()? },
            CHANGE_USER_REVOKE => AuthChange::UserRevokeRole { name: reader.string()?, role: reader.string()? },
            CHANGE_ROLE_ADD => AuthChange::RoleAdd { name: reader.string()? },
            CHANGE_ROLE_DELETE => AuthChange::RoleDelete { name: reader.string()? },
            CHANGE_ROLE_GRANT => AuthChange::RoleGrantPermission { name: reader.string()?, permission: reader.permission()? },
            CHANGE_ROLE_REVOKE => AuthChange::RoleRevokePermission {
                name: reader.string()?,
                key: reader.bytes()?.to_vec(),
                range_end: reader.bytes()?.to_vec(),
            },
            other => return Err(format!("unknown auth change {other}")),
        };
        reader.finish()?;
        Ok(change)
    }
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&u32::try_from(value).expect("auth state parts fit in u32").to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_bytes(out, text.as_bytes());
        }
    }
}

fn access_code(access: Access) -> u8 {
    match access {
        Access::Read => 0,
        Access::Write => 1,
        Access::ReadWrite => 2,
    }
}

fn put_permission(out: &mut Vec<u8>, permission: &Permission) {
    out.push(access_code(permission.access));
    put_bytes(out, &permission.key);
    put_bytes(out, &permission.range_end);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len()).ok_or("auth data runs past its end")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn count(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.count()?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "auth name is not UTF-8".to_string())
    }

    fn optional(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            other => Err(format!("optional flag {other}")),
        }
    }

    fn permission(&mut self) -> Result<Permission, String> {
        let access = match self.u8()? {
            0 => Access::Read,
            1 => Access::Write,
            2 => Access::ReadWrite,
            other => return Err(format!("permission type {other}")),
        };
        Ok(Permission { access, key: self.bytes()?.to_vec(), range_end: self.bytes()?.to_vec() })
    }

    fn finish(&self) -> Result<(), String> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err("bytes left after the auth data".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_add(name: &str) -> AuthChange {
        AuthChange::UserAdd { name: name.into(), password: Some(format!("hash-of-{name}")) }
    }

    fn grant(name: &str, role: &str) -> AuthChange {
        AuthChange::UserGrantRole { name: name.into(), role: role.into() }
    }

    fn permission(access: Access, key: &str, range_end: &str) -> Permission {
        Permission { access, key: key.into(), range_end: range_end.into() }
    }

    #[test]
    fn etcds_rules_for_enabling_and_for_root() {
        let mut state = AuthState::default();
        assert_eq!(state.apply(&AuthChange::Enable), Err(AuthError::RootUserNotExist));
        state.apply(&user_add("root")).unwrap();
        assert_eq!(state.apply(&AuthChange::Enable), Err(AuthError::RootRoleNotExist));
        assert_eq!(state.apply(&grant("root", ROOT)), Ok(true), "the root role need not exist to be granted");
        assert_eq!(state.apply(&grant("root", ROOT)), Ok(false), "granted twice: no change, no error");
        let revision = state.revision;
        assert_eq!(state.apply(&AuthChange::Enable), Ok(true));
        assert_eq!(state.revision, revision + 1);
        assert_eq!(state.apply(&AuthChange::Enable), Ok(false));
        assert_eq!(state.revision, revision + 1, "no change, no new revision");
        assert_eq!(state.apply(&AuthChange::UserDelete { name: ROOT.into() }), Err(AuthError::InvalidManagement));
        assert_eq!(state.apply(&AuthChange::UserRevokeRole { name: ROOT.into(), role: ROOT.into() }), Err(AuthError::InvalidManagement));
        state.apply(&AuthChange::RoleAdd { name: ROOT.into() }).unwrap();
        assert_eq!(state.apply(&AuthChange::RoleDelete { name: ROOT.into() }), Err(AuthError::InvalidManagement));
        assert!(state.is_root(ROOT) && state.allows(ROOT, Access::Write, b"any", b"\0"));
        state.apply(&AuthChange::Disable).unwrap();
        assert_eq!(state.apply(&AuthChange::Disable), Ok(false));
        state.apply(&AuthChange::UserDelete { name: ROOT.into() }).unwrap();
    }

    #[test]
    fn users_roles_and_permissions() {
        let mut state = AuthState::default();
        let before = state.clone();
        assert_eq!(state.apply(&AuthChange::UserAdd { name: String::new(), password: None }), Err(AuthError::UserEmpty));
        assert_eq!(state.apply(&AuthChange::RoleAdd { name: String::new() }), Err(AuthError::RoleEmpty));
        assert_eq!(state.apply(&grant("alice", "reader")), Err(AuthError::UserNotFound));
        assert_eq!(state, before, "refused changes change nothing");
        state.apply(&user_add("alice")).unwrap();
        assert_eq!(state.apply(&user_add("alice")), Err(AuthError::UserExists));
        assert_eq!(state.apply(&grant("alice", "reader")), Err(AuthError::RoleNotFound));
        state.apply(&AuthChange::RoleAdd { name: "reader".into() }).unwrap();
        assert_eq!(state.apply(&AuthChange::RoleAdd { name: "reader".into() }), Err(AuthError::RoleExists));
        state.apply(&grant("alice", "reader")).unwrap();
        let read_a = AuthChange::RoleGrantPermission { name: "reader".into(), permission: permission(Access::Read, "/a", "/b") };
        state.apply(&read_a).unwrap();
        assert!(state.allows("alice", Access::Read, b"/a/x", b""));
        assert!(!state.allows("alice", Access::Write, b"/a/x", b""));
        assert!(!state.allows("bob", Access::Read, b"/a/x", b""), "unknown users may do nothing");
        // The same range again changes the access; another range is added in key order.
        state
            .apply(&AuthChange::RoleGrantPermission { name: "reader".into(), permission: permission(Access::ReadWrite, "/a", "/b") })
            .unwrap();
        state.apply(&AuthChange::RoleGrantPermission { name: "reader".into(), permission: permission(Access::Read, "/0", "") }).unwrap();
        assert_eq!(state.roles["reader"], vec![permission(Access::Read, "/0", ""), permission(Access::ReadWrite, "/a", "/b")]);
        assert!(state.allows("alice", Access::Write, b"/a/x", b""));
        let revoke = |key: &str, range_end: &str| AuthChange::RoleRevokePermission {
            name: "reader".into(),
            key: key.into(),
            range_end: range_end.into(),
        };
        assert_eq!(state.apply(&revoke("/a", "")), Err(AuthError::PermissionNotGranted), "the range must match exactly");
        state.apply(&revoke("/a", "/b")).unwrap();
        assert!(!state.allows("alice", Access::Read, b"/a/x", b""));
        assert_eq!(
            state.apply(&AuthChange::UserRevokeRole { name: "alice".into(), role: "writer".into() }),
            Err(AuthError::RoleNotGranted)
        );
        // Deleting a role takes it from its users: adding it again grants nothing.
        state.apply(&AuthChange::RoleDelete { name: "reader".into() }).unwrap();
        assert!(state.users["alice"].roles.is_empty());
        assert_eq!(state.apply(&AuthChange::RoleDelete { name: "reader".into() }), Err(AuthError::RoleNotFound));
        assert_eq!(state.apply(&AuthChange::UserChangePassword { name: "bob".into(), password: "x".into() }), Err(AuthError::UserNotFound));
    }

    #[test]
    fn states_and_changes_round_trip_and_damage_is_refused() {
        let changes = [
            AuthChange::Enable,
            AuthChange::Disable,
            user_add("alice"),
            AuthChange::UserAdd { name: "cert-only".into(), password: None },
            AuthChange::UserDelete { name: "alice".into() },
            AuthChange::UserChangePassword { name: "alice".into(), password: "h".into() },
            grant("alice", "r"),
            AuthChange::UserRevokeRole { name: "alice".into(), role: "r".into() },
            AuthChange::RoleAdd { name: "r".into() },
            AuthChange::RoleDelete { name: "r".into() },
            AuthChange::RoleGrantPermission { name: "r".into(), permission: permission(Access::Write, "k", "\0") },
            AuthChange::RoleRevokePermission { name: "r".into(), key: b"k".to_vec(), range_end: vec![0] },
        ];
        for change in &changes {
            let bytes = change.encode();
            assert_eq!(&AuthChange::decode(&bytes).unwrap(), change);
            for cut in 0..bytes.len() {
                assert!(AuthChange::decode(&bytes[..cut]).is_err());
            }
        }
        let mut state = AuthState::default();
        for change in [
            user_add("root"),
            grant("root", ROOT),
            AuthChange::RoleAdd { name: "r".into() },
            AuthChange::RoleGrantPermission { name: "r".into(), permission: permission(Access::Read, "a", "b") },
            AuthChange::UserAdd { name: "u".into(), password: None },
            grant("u", "r"),
            AuthChange::Enable,
        ] {
            state.apply(&change).unwrap();
        }
        let bytes = state.encode();
        assert_eq!(AuthState::decode(&bytes).unwrap(), state);
        for cut in 0..bytes.len() {
            assert!(AuthState::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(AuthState::decode(&longer).is_err());
    }
}
