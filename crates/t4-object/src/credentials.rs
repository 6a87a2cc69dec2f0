//! Where S3 credentials come from.
//!
//! Keys given explicitly (`--s3-access-key-id` with `--s3-secret-access-key`) are used as
//! they are. Otherwise the AWS credential chain (`aws-config`) is asked, in the order the
//! AWS tools use: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`; the
//! shared config and credentials files (`AWS_PROFILE` or `default`: static keys, `role_arn`
//! with `source_profile` or `credential_source`, `credential_process`, SSO,
//! `web_identity_token_file`); web identity from `AWS_WEB_IDENTITY_TOKEN_FILE` and
//! `AWS_ROLE_ARN`; the ECS/EKS container endpoint; EC2 instance metadata (IMDSv2). A profile
//! named with `--s3-profile` is looked up in the files only, as the AWS CLI's `--profile`
//! does. Temporary credentials are refreshed before they expire by the SDK's identity cache.

/// How requests are signed.
#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// Keys given explicitly.
    Keys { access_key_id: String, secret_access_key: String, session_token: Option<String> },
    /// The AWS credential chain; `profile` restricts it to that profile of the shared files.
    Chain { profile: Option<String> },
}

impl S3Credentials {
    /// Static keys without a session token.
    pub fn keys(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self::Keys { access_key_id: access_key_id.into(), secret_access_key: secret_access_key.into(), session_token: None }
    }

    /// From the command line: both keys, or neither (then the chain, or the `profile`).
    pub fn from_flags(access_key_id: Option<String>, secret_access_key: Option<String>, profile: Option<String>) -> Result<Self, String> {
        match (access_key_id, secret_access_key) {
            (Some(_), Some(_)) if profile.is_some() => Err("give --s3-profile or the keys, not both".into()),
            (Some(access_key_id), Some(secret_access_key)) => Ok(Self::Keys { access_key_id, secret_access_key, session_token: None }),
            (None, None) => Ok(Self::Chain { profile }),
            _ => Err("give both --s3-access-key-id and --s3-secret-access-key, or neither".into()),
        }
    }
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keys { access_key_id, .. } => f.debug_struct("Keys").field("access_key_id", access_key_id).finish_non_exhaustive(),
            Self::Chain { profile } => f.debug_struct("Chain").field("profile", profile).finish(),
        }
    }
}

#[cfg(feature = "s3")]
pub(crate) use chain::provider;

#[cfg(feature = "s3")]
mod chain {
    use aws_config::default_provider::credentials::DefaultCredentialsChain;
    use aws_config::profile::ProfileFileCredentialsProvider;
    use aws_config::provider_config::ProviderConfig;
    use aws_sdk_s3::config::{Credentials, ProvideCredentials, Region, SharedCredentialsProvider, SharedHttpClient};
    use aws_sdk_s3::error::DisplayErrorContext;

    use super::S3Credentials;
    use t4_env::ObjectError;

    /// A provider for `credentials`, asked once here so that a node without credentials
    /// says so when it starts, not at its first upload.
    pub(crate) async fn provider(
        credentials: S3Credentials,
        region: Region,
        http: SharedHttpClient,
    ) -> Result<SharedCredentialsProvider, ObjectError> {
        let profile = match credentials {
            S3Credentials::Keys { access_key_id, secret_access_key, session_token } => {
                let keys = Credentials::new(access_key_id, secret_access_key, session_token, None, "t4 flags");
                return Ok(SharedCredentialsProvider::new(keys));
            }
            S3Credentials::Chain { profile } => profile,
        };
        let config = ProviderConfig::default().with_http_client(http).with_region(Some(region));
        let provider = match &profile {
            Some(name) => {
                SharedCredentialsProvider::new(ProfileFileCredentialsProvider::builder().configure(&config).profile_name(name).build())
            }
            None => SharedCredentialsProvider::new(DefaultCredentialsChain::builder().configure(config).build().await),
        };
        match provider.provide_credentials().await {
            Ok(found) => {
                tracing::info!(credentials = ?found, "s3 credentials");
                Ok(provider)
            }
            Err(error) => {
                let source = match &profile {
                    Some(name) => format!("profile {name:?}"),
                    None => "the AWS credential chain".into(),
                };
                Err(ObjectError::Other(format!("no S3 credentials from {source}: {}", DisplayErrorContext(&error))))
            }
        }
    }
}
