//! The Auth service: a thin shell over [`EtcdCore`](t4::api::EtcdCore)'s auth methods.

use t4_proto::etcdserverpb::auth_server::Auth;
use t4_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::errors::status;
use super::{credentials, Service};

#[tonic::async_trait]
impl Auth for Service {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        self.core.auth_enable(&credentials(&request)).await.map(Response::new).map_err(status)
    }

    async fn auth_disable(&self, request: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        self.core.auth_disable(&credentials(&request)).await.map(Response::new).map_err(status)
    }

    async fn auth_status(&self, _request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        Ok(Response::new(self.core.auth_status()))
    }

    async fn authenticate(&self, request: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        let _timer = self.metrics.time("authenticate");
        self.core.authenticate(request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        self.core.user_add(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        self.core.user_get(&credentials(&request), request.into_inner()).map(Response::new).map_err(status)
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        self.core.user_list(&credentials(&request)).map(Response::new).map_err(status)
    }

    async fn user_delete(&self, request: Request<AuthUserDeleteRequest>) -> Result<Response<AuthUserDeleteResponse>, Status> {
        self.core.user_delete(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        self.core.user_change_password(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn user_grant_role(&self, request: Request<AuthUserGrantRoleRequest>) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        self.core.user_grant_role(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn user_revoke_role(&self, request: Request<AuthUserRevokeRoleRequest>) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        self.core.user_revoke_role(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        self.core.role_add(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        self.core.role_get(&credentials(&request), request.into_inner()).map(Response::new).map_err(status)
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        self.core.role_list(&credentials(&request)).map(Response::new).map_err(status)
    }

    async fn role_delete(&self, request: Request<AuthRoleDeleteRequest>) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        self.core.role_delete(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        self.core.role_grant_permission(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        self.core.role_revoke_permission(&credentials(&request), request.into_inner()).await.map(Response::new).map_err(status)
    }
}
