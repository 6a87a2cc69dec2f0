//! Authentication and RBAC with etcd's semantics — the parts built so far: password
//! hashing ([`password`]), the permission check over key ranges ([`permissions`]) and simple
//! tokens with login rate limiting ([`tokens`]). Users and roles in the log, the Auth
//! service and enforcement are not built yet (README): the Auth RPCs answer `Unimplemented`
//! and AuthStatus says disabled.

pub mod password;
pub mod permissions;
pub mod tokens;
