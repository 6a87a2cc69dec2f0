//! A throwaway certificate authority for TLS tests: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, and client certificates by common name, as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
}

/// A certificate and its key on disk.
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "t4 test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = params.self_signed(&key).unwrap().pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Self { dir, issuer: Issuer::new(params, key), ca_pem }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `localhost` and `127.0.0.1` (usable by servers and clients).
    pub fn server(&self) -> Identity {
        self.issue("server", "localhost", vec!["localhost".into(), "127.0.0.1".into()])
    }

    /// A client certificate whose common name is `name` (etcd's user for mTLS auth).
    pub fn client(&self, name: &str) -> Identity {
        self.issue(&format!("client-{name}"), name, Vec::new())
    }

    fn issue(&self, file: &str, common_name: &str, names: Vec<String>) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let identity = Identity { cert: self.path(&format!("{file}.pem")), key: self.path(&format!("{file}-key.pem")) };
        std::fs::write(&identity.cert, certificate.pem()).unwrap();
        std::fs::write(&identity.key, key.serialize_pem()).unwrap();
        identity
    }

    fn path(&self, name: &str) -> PathBuf {
        Path::new(self.dir.path()).join(name)
    }
}
