//! Password hashing: argon2id for new hashes; bcrypt `$2a$/$2b$/$2y$` hashes from the original
//! system still verify and are replaced at the next successful login. Both are CPU-heavy, so
//! callers run them on the blocking pool.
use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

use crate::error::ApiError;

pub fn hash(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("argon2 hashing failed: {e}")))
}

#[derive(Clone, Copy)]
pub enum Verdict {
    Mismatch,
    Match,
    /// Correct, but stored in a legacy format that should be re-hashed.
    MatchNeedsUpgrade,
}

pub fn verify(password: &str, stored: &str) -> Verdict {
    if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verdict::MatchNeedsUpgrade,
            _ => Verdict::Mismatch,
        };
    }
    match PasswordHash::new(stored) {
        Ok(parsed) if Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() => Verdict::Match,
        _ => Verdict::Mismatch,
    }
}

/// A hash to verify against when the account does not exist, so a login for an unknown email
/// takes as long as one for a known email.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("not-a-real-password").expect("argon2 hash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(matches!(verify("correct horse", &h), Verdict::Match));
        assert!(matches!(verify("wrong", &h), Verdict::Mismatch));
    }

    #[test]
    fn bcrypt_hashes_verify_and_ask_for_upgrade() {
        let legacy = bcrypt::hash_with_result("old-password", 4).unwrap().format_for_version(bcrypt::Version::TwoB);
        assert!(legacy.starts_with("$2b$"));
        assert!(matches!(verify("old-password", &legacy), Verdict::MatchNeedsUpgrade));
        assert!(matches!(verify("nope", &legacy), Verdict::Mismatch));
        assert!(matches!(verify("x", "garbage"), Verdict::Mismatch));
    }
}
