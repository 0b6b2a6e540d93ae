//! Access tokens (HS256 JWT) and refresh tokens (random, stored as SHA-256).
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const ROLE_ADMIN: &str = "admin";
pub const ROLE_USER: &str = "user";

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    /// Distinguishes access tokens from any other JWT signed with the same key.
    pub typ: String,
}

impl AccessClaims {
    pub fn user_id(&self) -> i32 {
        self.sub.parse().unwrap_or(-1)
    }
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl_secs: i64, refresh_ttl_secs: i64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            access_ttl_secs,
            refresh_ttl_secs,
        }
    }

    pub fn issue_access(&self, user_id: i32, role: &str, now: DateTime<Utc>) -> String {
        let claims = AccessClaims {
            sub: user_id.to_string(),
            role: role.to_owned(),
            iat: now.timestamp(),
            exp: now.timestamp() + self.access_ttl_secs,
            typ: "access".into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// Checks signature and type; expiry is checked against `now` from the injectable clock.
    pub fn verify_access(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map_err(|_| ApiError::Unauthorized("invalid access token"))?
            .claims;
        if claims.typ != "access" {
            return Err(ApiError::Unauthorized("invalid access token"));
        }
        if claims.exp <= now.timestamp() {
            return Err(ApiError::Unauthorized("access token expired"));
        }
        Ok(claims)
    }
}

/// A new opaque refresh token: 32 random bytes, hex.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn access_token_expires_by_the_given_clock() {
        let keys = TokenKeys::new(b"secret", 900, 3600);
        let now = Utc::now();
        let token = keys.issue_access(42, "user", now);
        assert_eq!(keys.verify_access(&token, now).unwrap().user_id(), 42);
        assert!(keys.verify_access(&token, now + Duration::seconds(899)).is_ok());
        assert!(keys.verify_access(&token, now + Duration::seconds(900)).is_err());
        assert!(TokenKeys::new(b"other", 900, 3600).verify_access(&token, now).is_err());
    }
}
