//! Secrets at rest (SPEC §2): AEAD (ChaCha20-Poly1305 from ring, already in the tree for TLS)
//! under a 256-bit master key, with the row id as associated data so a sealed value cannot be
//! moved to another row. A key check value stored in the database makes a server started with
//! the wrong key refuse to run instead of failing on every secret later.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

pub struct MasterKey {
    key: LessSafeKey,
    check: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, given as 64 hex digits or base64")]
    BadKey,
    #[error("a sealed secret could not be opened (wrong master key, or the data was altered)")]
    Open,
}

impl MasterKey {
    /// From `TOLLGATE_MASTER_KEY`: 64 hex digits or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = if text.len() == 64 {
            hex::decode(text).map_err(|_| CryptoError::BadKey)?
        } else {
            STANDARD.decode(text).map_err(|_| CryptoError::BadKey)?
        };
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| CryptoError::BadKey)?;
        let mut h = Sha256::new();
        h.update(b"tollgate master key check v1");
        h.update(bytes);
        Ok(Self {
            key: LessSafeKey::new(key),
            check: hex::encode(&h.finalize()[..16]),
        })
    }

    /// A fresh random key, hex encoded (for the SQLite key file).
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        // ring's SystemRandom reads the OS generator; it does not fail on supported systems.
        let _ = SystemRandom::new().fill(&mut bytes);
        hex::encode(bytes)
    }

    /// A non-secret fingerprint of the key, stored in the database.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    /// nonce || ciphertext || tag.
    pub fn seal(&self, row_id: &str, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        let _ = SystemRandom::new().fill(&mut nonce);
        let mut buf = plaintext.as_bytes().to_vec();
        // Sealing in place cannot fail for inputs below ring's size limit (~256 GiB).
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(row_id.as_bytes()),
            &mut buf,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    pub fn open(&self, row_id: &str, sealed: &[u8]) -> Result<String, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(row_id.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Open)
    }
}

/// `sk_test_…4242`: the kind prefix and the last four characters.
pub fn mask(secret: &str) -> String {
    const PREFIXES: &[&str] = &[
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_", "whsec_",
    ];
    let prefix_end = PREFIXES
        .iter()
        .find(|p| secret.starts_with(**p))
        .map_or(0, |p| p.len());
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{}…{tail}", &secret[..prefix_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_bound_to_row() {
        let k = MasterKey::parse(&MasterKey::generate_hex()).unwrap();
        let sealed = k.seal("row-1", "sk_test_secret");
        assert_eq!(k.open("row-1", &sealed).unwrap(), "sk_test_secret");
        assert!(k.open("row-2", &sealed).is_err());
        let other = MasterKey::parse(&MasterKey::generate_hex()).unwrap();
        assert!(other.open("row-1", &sealed).is_err());
        assert_ne!(k.check_value(), other.check_value());
    }

    #[test]
    fn masks() {
        assert_eq!(mask("sk_test_abcdef4242"), "sk_test_…4242");
        assert_eq!(mask("whsec_abcd1234"), "whsec_…1234");
        assert!(MasterKey::parse("short").is_err());
    }
}
