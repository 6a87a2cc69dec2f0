//! Where S3 credentials come from, in the order the AWS tools look (the part of their chain
//! that needs no network): keys given explicitly, then `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, then a profile of the shared credentials
//! file (`AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/credentials`; the profile named, or
//! `AWS_PROFILE`, or `default`). Instance roles, SSO and web identity are not looked up.

/// Keys to sign requests with, and where they were found (for the log).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub source: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials").field("access_key_id", &self.access_key_id).field("source", &self.source).finish_non_exhaustive()
    }
}

/// What the lookup may read: environment variables and files (a seam for tests).
pub trait CredentialSources {
    fn var(&self, name: &str) -> Option<String>;
    fn read(&self, path: &str) -> Option<String>;
}

/// The process's environment and file system.
#[derive(Debug, Default)]
pub struct ProcessSources;

impl CredentialSources for ProcessSources {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}

/// Resolves credentials: `explicit` (id, secret) first; a named `profile` skips the
/// environment's keys, as the AWS CLI does with `--profile`.
pub fn resolve(
    explicit: (Option<String>, Option<String>),
    profile: Option<&str>,
    sources: &dyn CredentialSources,
) -> Result<S3Credentials, String> {
    match explicit {
        (Some(access_key_id), Some(secret_access_key)) => {
            return Ok(S3Credentials { access_key_id, secret_access_key, session_token: None, source: "flags".into() })
        }
        (Some(_), None) | (None, Some(_)) => return Err("give both --s3-access-key-id and --s3-secret-access-key, or neither".into()),
        (None, None) => {}
    }
    if profile.is_none() {
        if let (Some(access_key_id), Some(secret_access_key)) = (sources.var("AWS_ACCESS_KEY_ID"), sources.var("AWS_SECRET_ACCESS_KEY")) {
            let session_token = sources.var("AWS_SESSION_TOKEN");
            return Ok(S3Credentials { access_key_id, secret_access_key, session_token, source: "environment".into() });
        }
    }
    let name = profile.map(str::to_string).or_else(|| sources.var("AWS_PROFILE")).unwrap_or_else(|| "default".into());
    let path = sources
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| sources.var("HOME").map(|home| format!("{home}/.aws/credentials")))
        .ok_or("no credentials: give --s3-access-key-id/--s3-secret-access-key, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a credentials file")?;
    let Some(text) = sources.read(&path) else {
        return Err(format!(
            "no credentials: not in flags or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and no credentials file at {path} (profile {name:?})"
        ));
    };
    let section = profile_section(&text, &name).ok_or_else(|| format!("profile {name:?} is not in {path}"))?;
    let field = |key: &str| section.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone());
    match (field("aws_access_key_id"), field("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: field("aws_session_token"),
            source: format!("profile {name} in {path}"),
        }),
        _ => Err(format!(
            "profile {name:?} in {path} has no aws_access_key_id/aws_secret_access_key (roles, SSO and processes are not supported)"
        )),
    }
}

/// The `key = value` lines of `[name]` in an INI-style credentials file.
fn profile_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut inside = None;
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            if inside == Some(true) {
                break;
            }
            inside = Some(header.trim() == name);
            continue;
        }
        if inside == Some(true) {
            if let Some((key, value)) = line.split_once('=') {
                fields.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    (inside == Some(true)).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Fake {
        vars: BTreeMap<String, String>,
        files: BTreeMap<String, String>,
    }

    impl CredentialSources for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn read(&self, path: &str) -> Option<String> {
            self.files.get(path).cloned()
        }
    }

    const FILE: &str = "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n[ci]\nAWS_ACCESS_KEY_ID=CI\naws_secret_access_key= cisecret \naws_session_token = tok\n[empty]\nregion = us-east-1\n";

    fn fake(vars: &[(&str, &str)]) -> Fake {
        let mut fake = Fake::default();
        fake.vars.insert("HOME".into(), "/home/u".into());
        for (name, value) in vars {
            fake.vars.insert(name.to_string(), value.to_string());
        }
        fake.files.insert("/home/u/.aws/credentials".into(), FILE.into());
        fake
    }

    #[test]
    fn the_chain_looks_in_order() {
        let flags = resolve((Some("F".into()), Some("fs".into())), None, &fake(&[("AWS_ACCESS_KEY_ID", "E")])).unwrap();
        assert_eq!((flags.access_key_id.as_str(), flags.source.as_str()), ("F", "flags"));
        let env = fake(&[("AWS_ACCESS_KEY_ID", "E"), ("AWS_SECRET_ACCESS_KEY", "es"), ("AWS_SESSION_TOKEN", "et")]);
        let found = resolve((None, None), None, &env).unwrap();
        assert_eq!((found.access_key_id.as_str(), found.session_token.as_deref()), ("E", Some("et")));
        let named = resolve((None, None), Some("ci"), &env).unwrap();
        assert_eq!(
            (named.access_key_id.as_str(), named.secret_access_key.as_str(), named.session_token.as_deref()),
            ("CI", "cisecret", Some("tok"))
        );
        let default = resolve((None, None), None, &fake(&[])).unwrap();
        assert_eq!((default.access_key_id.as_str(), default.session_token), ("DEF", None));
        let by_env_profile = resolve((None, None), None, &fake(&[("AWS_PROFILE", "ci")])).unwrap();
        assert_eq!(by_env_profile.access_key_id, "CI");
        let elsewhere = fake(&[("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds")]);
        assert!(resolve((None, None), None, &elsewhere).unwrap_err().contains("/etc/creds"));
    }

    #[test]
    fn what_is_missing_is_named() {
        assert!(resolve((Some("F".into()), None), None, &fake(&[])).unwrap_err().contains("both"));
        assert!(resolve((None, None), Some("nope"), &fake(&[])).unwrap_err().contains("profile \"nope\" is not in"));
        assert!(resolve((None, None), Some("empty"), &fake(&[])).unwrap_err().contains("has no aws_access_key_id"));
        assert!(format!("{:?}", resolve((None, None), None, &fake(&[])).unwrap()).find("defsecret").is_none(), "secrets stay out of Debug");
    }
}
