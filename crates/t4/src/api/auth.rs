//! The Auth service's semantics: etcd's rules for who may manage users and roles (root,
//! once auth is on), Authenticate with rate limiting, and the changes themselves, which go
//! through the log like data (see [`crate::auth::state`]).

use t4_proto::authpb;
use t4_proto::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse, AuthUserGetRequest,
    AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse, ResponseHeader,
};

use super::EtcdCore;
use crate::auth::gate::{Caller, Credentials};
use crate::auth::password;
use crate::auth::permissions::{Access, Permission};
use crate::auth::state::AuthChange;
use crate::error::{AuthError, Error, Result};

impl EtcdCore {
    /// Root checks a change, then it goes through the log; answers with a header.
    async fn managed(&self, credentials: &Credentials, change: AuthChange) -> Result<Option<ResponseHeader>> {
        let caller = self.caller(credentials)?;
        caller.require_root()?;
        self.apply_auth(&caller, change).await
    }

    async fn apply_auth(&self, caller: &Caller, change: AuthChange) -> Result<Option<ResponseHeader>> {
        let tokens_of = change.invalidates_tokens_of().map(str::to_string);
        let request = crate::mvcc::WriteRequest::Auth(change);
        let response = match self.node.write_checked(request, caller.auth_revision()).await? {
            crate::mvcc::WriteResponse::Auth(response) => response,
            other => unreachable!("auth change answered with {other:?}"),
        };
        if let Some(user) = tokens_of {
            self.gate.tokens.revoke_user(&user);
        }
        let mut header = response.header;
        self.fill(&mut header);
        Ok(header)
    }

    /// Needs a root user holding the root role; with auth already on, only root may ask.
    pub async fn auth_enable(&self, credentials: &Credentials) -> Result<AuthEnableResponse> {
        Ok(AuthEnableResponse { header: self.managed(credentials, AuthChange::Enable).await? })
    }

    /// Only root may turn auth off (T4, the Go original, let anyone). Every token dies.
    pub async fn auth_disable(&self, credentials: &Credentials) -> Result<AuthDisableResponse> {
        let header = self.managed(credentials, AuthChange::Disable).await?;
        self.gate.tokens.clear();
        Ok(AuthDisableResponse { header })
    }

    pub fn auth_status(&self) -> AuthStatusResponse {
        let state = self.node.auth_state();
        AuthStatusResponse { header: self.header(self.node.current_revision()), enabled: state.enabled, auth_revision: state.revision }
    }

    /// Checks a user's password and hands out a token. After a few failures in a row the
    /// user's attempts are slowed down ("too many requests" until the wait is over); each
    /// attempt counts as a failure from the moment it is let through until it succeeds.
    /// Every attempt, for a user that exists or not, costs one password check, and checks
    /// run [`crate::auth::gate::LOGIN_VERIFIES_MAX`] at a time, a bounded number waiting.
    pub async fn authenticate(&self, request: AuthenticateRequest) -> Result<AuthenticateResponse> {
        let state = self.node.auth_state();
        if !state.enabled {
            return Err(AuthError::NotEnabled.into());
        }
        let ticket = self.gate.logins.enter()?;
        if self.gate.tokens.reserve(&request.name, self.node.monotonic_now()).is_err() {
            return Err(AuthError::TooManyRequests.into());
        }
        let stored = state.users.get(&request.name).and_then(|user| user.password.clone());
        let (password, hash) = (request.password, stored.clone().unwrap_or_else(|| password::decoy().to_string()));
        let matched = ticket.verify(move || password::verify(&password, &hash)).await;
        let Some(stored) = stored.filter(|_| matched) else {
            tracing::info!(user = %request.name, "authentication failed");
            return Err(AuthError::Failed.into());
        };
        self.gate.tokens.succeeded(&request.name);
        let token = self.gate.tokens.issue(&request.name, &stored, self.node.monotonic_now());
        Ok(AuthenticateResponse { header: self.header(self.node.current_revision()), token })
    }

    pub async fn user_add(&self, credentials: &Credentials, request: AuthUserAddRequest) -> Result<AuthUserAddResponse> {
        let caller = self.caller(credentials)?;
        caller.require_root()?;
        if request.name.is_empty() {
            return Err(AuthError::UserEmpty.into());
        }
        let no_password = request.options.as_ref().is_some_and(|options| options.no_password);
        let password = if no_password { None } else { Some(hash_password(request.password, &request.hashed_password).await?) };
        let header = self.apply_auth(&caller, AuthChange::UserAdd { name: request.name, password }).await?;
        Ok(AuthUserAddResponse { header })
    }

    /// Root, or the user itself.
    pub fn user_get(&self, credentials: &Credentials, request: AuthUserGetRequest) -> Result<AuthUserGetResponse> {
        let caller = self.caller(credentials)?;
        caller.require_root_or_user(&request.name)?;
        let user = caller.state().users.get(&request.name).ok_or(AuthError::UserNotFound)?;
        Ok(AuthUserGetResponse { header: self.header(self.node.current_revision()), roles: user.roles.iter().cloned().collect() })
    }

    pub fn user_list(&self, credentials: &Credentials) -> Result<AuthUserListResponse> {
        let caller = self.caller(credentials)?;
        caller.require_root()?;
        Ok(AuthUserListResponse {
            header: self.header(self.node.current_revision()),
            users: caller.state().users.keys().cloned().collect(),
        })
    }

    pub async fn user_delete(&self, credentials: &Credentials, request: AuthUserDeleteRequest) -> Result<AuthUserDeleteResponse> {
        Ok(AuthUserDeleteResponse { header: self.managed(credentials, AuthChange::UserDelete { name: request.name }).await? })
    }

    /// The user's tokens stop working.
    pub async fn user_change_password(
        &self,
        credentials: &Credentials,
        request: AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordResponse> {
        let caller = self.caller(credentials)?;
        caller.require_root()?;
        if !caller.state().users.contains_key(&request.name) {
            return Err(AuthError::UserNotFound.into());
        }
        let password = hash_password(request.password, &request.hashed_password).await?;
        let header = self.apply_auth(&caller, AuthChange::UserChangePassword { name: request.name, password }).await?;
        Ok(AuthUserChangePasswordResponse { header })
    }

    pub async fn user_grant_role(&self, credentials: &Credentials, request: AuthUserGrantRoleRequest) -> Result<AuthUserGrantRoleResponse> {
        let change = AuthChange::UserGrantRole { name: request.user, role: request.role };
        Ok(AuthUserGrantRoleResponse { header: self.managed(credentials, change).await? })
    }

    pub async fn user_revoke_role(
        &self,
        credentials: &Credentials,
        request: AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse> {
        let change = AuthChange::UserRevokeRole { name: request.name, role: request.role };
        Ok(AuthUserRevokeRoleResponse { header: self.managed(credentials, change).await? })
    }

    pub async fn role_add(&self, credentials: &Credentials, request: AuthRoleAddRequest) -> Result<AuthRoleAddResponse> {
        Ok(AuthRoleAddResponse { header: self.managed(credentials, AuthChange::RoleAdd { name: request.name }).await? })
    }

    /// Root, or a user holding the role.
    pub fn role_get(&self, credentials: &Credentials, request: AuthRoleGetRequest) -> Result<AuthRoleGetResponse> {
        let caller = self.caller(credentials)?;
        caller.require_root_or_role(&request.role)?;
        let permissions = caller.state().roles.get(&request.role).ok_or(AuthError::RoleNotFound)?;
        let perm = permissions
            .iter()
            .map(|permission| authpb::Permission {
                perm_type: permission_type(permission.access) as i32,
                key: permission.key.clone(),
                range_end: permission.range_end.clone(),
            })
            .collect();
        Ok(AuthRoleGetResponse { header: self.header(self.node.current_revision()), perm })
    }

    pub fn role_list(&self, credentials: &Credentials) -> Result<AuthRoleListResponse> {
        let caller = self.caller(credentials)?;
        caller.require_root()?;
        Ok(AuthRoleListResponse {
            header: self.header(self.node.current_revision()),
            roles: caller.state().roles.keys().cloned().collect(),
        })
    }

    /// Users lose the role with it.
    pub async fn role_delete(&self, credentials: &Credentials, request: AuthRoleDeleteRequest) -> Result<AuthRoleDeleteResponse> {
        Ok(AuthRoleDeleteResponse { header: self.managed(credentials, AuthChange::RoleDelete { name: request.role }).await? })
    }

    pub async fn role_grant_permission(
        &self,
        credentials: &Credentials,
        request: AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse> {
        let perm = request.perm.ok_or(AuthError::PermissionNotGiven)?;
        let access = match authpb::permission::Type::try_from(perm.perm_type) {
            Ok(authpb::permission::Type::Read) => Access::Read,
            Ok(authpb::permission::Type::Write) => Access::Write,
            Ok(authpb::permission::Type::Readwrite) => Access::ReadWrite,
            Err(_) => return Err(Error::InvalidArgument(format!("unknown permission type {}", perm.perm_type))),
        };
        let permission = Permission { access, key: perm.key, range_end: perm.range_end };
        let change = AuthChange::RoleGrantPermission { name: request.name, permission };
        Ok(AuthRoleGrantPermissionResponse { header: self.managed(credentials, change).await? })
    }

    pub async fn role_revoke_permission(
        &self,
        credentials: &Credentials,
        request: AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse> {
        let change = AuthChange::RoleRevokePermission { name: request.role, key: request.key, range_end: request.range_end };
        Ok(AuthRoleRevokePermissionResponse { header: self.managed(credentials, change).await? })
    }
}

/// A slow hash of `password`, off the async workers. Hashes made elsewhere (etcd 3.5's
/// `hashedPassword`, bcrypt) are refused: t4 could not check passwords against them.
async fn hash_password(password: String, hashed: &str) -> Result<String> {
    if !hashed.is_empty() {
        return Err(Error::InvalidArgument("t4 does not take pre-hashed passwords (hashedPassword); send the password".into()));
    }
    Ok(crate::env::blocking(move || password::hash(&password)).await)
}

fn permission_type(access: Access) -> authpb::permission::Type {
    match access {
        Access::Read => authpb::permission::Type::Read,
        Access::Write => authpb::permission::Type::Write,
        Access::ReadWrite => authpb::permission::Type::Readwrite,
    }
}

/// `t4 run --auth-enabled`: turns auth on, as `etcdctl user add root` + `auth enable`
/// would. Creates the root user with `root_password` if there is none (an existing root
/// keeps its password), gives it the root role, and enables auth. Nothing to do if auth is
/// on already.
pub async fn bootstrap_auth(node: &crate::Node, root_password: Option<String>) -> Result<()> {
    use crate::auth::state::ROOT;
    let state = node.auth_state();
    if state.enabled {
        tracing::info!("auth is on already");
        return Ok(());
    }
    match (state.users.get(ROOT), root_password) {
        (None, None) => {
            return Err(Error::InvalidArgument(
                "there is no root user yet: give its password with --root-password (or T4_ROOT_PASSWORD)".into(),
            ));
        }
        (None, Some(password)) => {
            let password = crate::env::blocking(move || password::hash(&password)).await;
            node.auth_change(AuthChange::UserAdd { name: ROOT.into(), password: Some(password) }).await?;
            tracing::info!("auth: root user created");
        }
        (Some(_), Some(_)) => tracing::info!("auth: the root user exists; its password is kept (--root-password is not applied)"),
        (Some(_), None) => {}
    }
    if !node.auth_state().roles.contains_key(ROOT) {
        node.auth_change(AuthChange::RoleAdd { name: ROOT.into() }).await?;
    }
    node.auth_change(AuthChange::UserGrantRole { name: ROOT.into(), role: ROOT.into() }).await?;
    node.auth_change(AuthChange::Enable).await?;
    tracing::info!("auth enabled");
    Ok(())
}
