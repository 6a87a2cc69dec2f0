//! Authentication and RBAC with etcd's semantics — the parts built so far: password
//! hashing ([`password`]) and the permission check over key ranges ([`permissions`]). The
//! Auth service, tokens and enforcement are not built yet (README): the Auth RPCs answer
//! `Unimplemented` and AuthStatus says disabled.

pub mod password;
pub mod permissions;
