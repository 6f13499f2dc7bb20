//! The HMAC-SHA-256 keys the operator signs its own records with (the audit chain, the ledger),
//! each read from a file as a Kubernetes Secret is mounted.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shorter keys are refused: the key is all that stands between a forged record and one that verifies.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl HmacKey {
    /// `what` names the key in errors, for example "the audit key".
    pub fn new(key: &[u8], what: &str) -> std::io::Result<Self> {
        if key.len() < MIN_KEY_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} has {} bytes; it needs at least {MIN_KEY_BYTES} (for example: head -c 32 /dev/urandom | base64)", key.len())));
        }
        // HMAC takes a key of any length (RFC 2104 §2).
        Ok(Self(Hmac::new_from_slice(key).expect("HMAC takes any key length")))
    }

    /// The key in a file, without trailing whitespace (the line end an editor or `echo` adds).
    pub fn from_file(path: &Path, what: &str) -> std::io::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| std::io::Error::new(e.kind(), format!("reading {what} {}: {e}", path.display())))?;
        Self::new(bytes.trim_ascii_end(), what)
    }

    /// A fresh MAC under this key, to feed a message into.
    pub fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_key_is_refused_with_how_to_make_one() {
        let error = HmacKey::new(b"0123456789abcdef0123456789abcde", "the ledger key").unwrap_err();
        assert_eq!(error.to_string(), "the ledger key has 31 bytes; it needs at least 32 (for example: head -c 32 /dev/urandom | base64)");
        assert!(HmacKey::new(b"0123456789abcdef0123456789abcdef", "the ledger key").is_ok());
    }

    #[test]
    fn a_key_file_loses_its_line_end_and_nothing_before_it() {
        let dir = std::env::temp_dir().join(format!("mfa-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let from_file = HmacKey::from_file(&path, "the ledger key").unwrap();
        let direct = HmacKey::new(b"0123456789abcdef0123456789abcdef", "the ledger key").unwrap();
        assert_eq!(from_file.mac().finalize().into_bytes(), direct.mac().finalize().into_bytes());
        let missing = HmacKey::from_file(&dir.join("nothing"), "the ledger key").unwrap_err();
        assert!(missing.to_string().starts_with("reading the ledger key "), "{missing}");
    }
}
