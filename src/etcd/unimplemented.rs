//! Auth: not built yet (README). Every RPC answers `Unimplemented` with a clear message
//! rather than pretending; AuthStatus reports auth disabled, which is true.

use t4_proto::etcdserverpb::auth_server::Auth;
use t4_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::errors::unimplemented;
use super::Service;

#[tonic::async_trait]
impl Auth for Service {
    async fn auth_enable(&self, _request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn auth_disable(&self, _request: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn authenticate(&self, _request: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn user_add(&self, _request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn user_get(&self, _request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn user_list(&self, _request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn user_delete(&self, _request: Request<AuthUserDeleteRequest>) -> Result<Response<AuthUserDeleteResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn user_change_password(
        &self,
        _request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn user_grant_role(&self, _request: Request<AuthUserGrantRoleRequest>) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn user_revoke_role(&self, _request: Request<AuthUserRevokeRoleRequest>) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn role_add(&self, _request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn role_get(&self, _request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn role_list(&self, _request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn role_delete(&self, _request: Request<AuthRoleDeleteRequest>) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn role_grant_permission(
        &self,
        _request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn role_revoke_permission(
        &self,
        _request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        Err(unimplemented("authentication"))
    }

    async fn auth_status(&self, _request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        let header = self.core.header(self.core.node().current_revision());
        Ok(Response::new(AuthStatusResponse { header, enabled: false, auth_revision: 0 }))
    }
}
