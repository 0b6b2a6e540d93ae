//! Encryption of secrets at rest (provider API keys, the SwanLab key): AES-256-GCM with a random
//! nonce per value and the owning row's id as associated data, so a ciphertext copied onto
//! another row does not decrypt.
use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;

#[derive(Clone)]
pub struct Cipher(Aes256Gcm);

#[derive(Debug, thiserror::Error)]
#[error("stored secret cannot be decrypted with the current key")]
pub struct DecryptError;

const VERSION: &str = "v1";

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(key.into()))
    }

    /// Returns `v1:<base64(nonce || ciphertext)>`.
    pub fn encrypt(&self, plaintext: &str, row_id: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: row_id.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{VERSION}:{}", STANDARD.encode(out))
    }

    pub fn decrypt(&self, stored: &str, row_id: &str) -> Result<String, DecryptError> {
        let body = stored.strip_prefix("v1:").ok_or(DecryptError)?;
        let bytes = STANDARD.decode(body).map_err(|_| DecryptError)?;
        if bytes.len() < 12 {
            return Err(DecryptError);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: row_id.as_bytes() })
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

/// The form of a secret an API may show: its first three and last four characters.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        let tail: String = chars[chars.len().saturating_sub(2)..].iter().collect();
        return format!("…{tail}");
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_row_binding() {
        let cipher = Cipher::new(&[7u8; 32]);
        let sealed = cipher.encrypt("sk-secret-value", "openai");
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(cipher.decrypt(&sealed, "openai").unwrap(), "sk-secret-value");
        assert!(cipher.decrypt(&sealed, "other-row").is_err());
        assert!(Cipher::new(&[8u8; 32]).decrypt(&sealed, "openai").is_err());
        assert_ne!(sealed, cipher.encrypt("sk-secret-value", "openai"), "nonce must differ");
    }

    #[test]
    fn masks_keep_only_the_edges() {
        assert_eq!(mask("sk-1234567890abcd"), "sk-…abcd");
        assert_eq!(mask("short"), "…rt");
    }
}
