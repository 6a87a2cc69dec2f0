//! Password hashes: PBKDF2-HMAC-SHA256 with a random 16-byte salt, stored as
//! `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`, so the cost can rise later without
//! invalidating stored hashes. Verification compares in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Iterations for new hashes: each guess costs 200,000 HMAC-SHA256 rounds, so guessing is
/// slow even with the store file in hand (not yet measured against etcd's bcrypt cost 10).
pub const ITERATIONS: u32 = 200_000;
const SCHEME: &str = "pbkdf2-sha256";
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str) -> String {
    let salt = crate::env::os_random(SALT_BYTES).expect("the OS random source works");
    hash_with(password, &salt, ITERATIONS)
}

fn hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let derived = pbkdf2_sha256(password.as_bytes(), salt, iterations);
    format!("{SCHEME}${iterations}${}${}", hex(salt), hex(&derived))
}

/// A hash of a random password, made once: logins of users that do not exist (or have no
/// password) are checked against it, so they take as long as those of users that do.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random = crate::env::os_random(SALT_BYTES).expect("the OS random source works");
        hash(&hex(&random))
    })
}

/// Whether `password` matches `stored` (a string [`hash`] made). A malformed `stored`
/// matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iterations), Some(salt), Some(expected), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(iterations), Some(salt), Some(expected)) = (iterations.parse::<u32>(), unhex(salt), unhex(expected)) else { return false };
    if iterations == 0 || expected.len() != HASH_BYTES {
        return false;
    }
    let derived = pbkdf2_sha256(password.as_bytes(), &salt, iterations);
    derived.iter().zip(&expected).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// PBKDF2 (RFC 8018) with HMAC-SHA256, one 32-byte block.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_BYTES] {
    let key = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes a key of any length");
    let mut mac = key.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut block: [u8; HASH_BYTES] = mac.finalize().into_bytes().into();
    let mut out = block;
    for _ in 1..iterations {
        let mut mac = key.clone();
        mac.update(&block);
        block = mac.finalize().into_bytes().into();
        out.iter_mut().zip(&block).for_each(|(out, byte)| *out ^= byte);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_test_vectors() {
        // PBKDF2-HMAC-SHA256 vectors (RFC 7914 section 11 and the widely published set).
        assert_eq!(hex(&pbkdf2_sha256(b"password", b"salt", 1)), "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b");
        assert_eq!(hex(&pbkdf2_sha256(b"password", b"salt", 2)), "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43");
        assert_eq!(hex(&pbkdf2_sha256(b"password", b"salt", 4096)), "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a");
    }

    #[test]
    fn hashes_verify_their_password_only_and_salts_differ() {
        let (a, b) = (hash_with("s3cret", b"0123456789abcdef", 1000), hash_with("s3cret", b"fedcba9876543210", 1000));
        assert_ne!(a, b, "different salts, different hashes");
        assert!(verify("s3cret", &a) && verify("s3cret", &b));
        assert!(!verify("s3cret ", &a) && !verify("", &a));
        for broken in ["", "pbkdf2-sha256$0$00$00", "md5$1$00$00", &a[..a.len() - 1], &format!("{a}$extra")] {
            assert!(!verify("s3cret", broken), "{broken:?}");
        }
        let fresh = hash("pw");
        assert!(fresh.starts_with("pbkdf2-sha256$200000$") && verify("pw", &fresh));
    }
}
