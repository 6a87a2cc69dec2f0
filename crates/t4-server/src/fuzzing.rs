//! Fuzz entry point for the server (the cargo-fuzz target `common_name` and the stable
//! test that replays its corpus): must never panic on any input.

/// The DER parser that finds a client certificate's common name (mTLS users).
pub fn common_name(data: &[u8]) {
    if let Some(name) = crate::common_name(data) {
        assert!(name.len() < data.len(), "a name comes from inside the certificate");
    }
}
