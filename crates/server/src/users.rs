//! Users as the API sees them, and the checked values their fields are made of.
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::{self, tokens},
    error::ApiError,
    validation::Checks,
};
use store::entities::users;

/// A user as every API answer shows it — never with the password hash.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct UserView {
    pub id: i32,
    pub email: String,
    pub nickname: Option<String>,
    pub role: String,
    pub is_admin: bool,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<users::Model> for UserView {
    fn from(u: users::Model) -> Self {
        Self {
            id: u.id,
            email: u.email,
            nickname: u.nickname,
            role: u.role,
            is_admin: u.is_admin,
            is_active: u.is_active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A syntactically plausible email address, trimmed and lower-cased (logins are
/// case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an email address like name@example.com".into());
        };
        let ok = !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !email.chars().any(char::is_whitespace)
            && email.len() <= 255;
        if ok { Ok(Self(email)) } else { Err("must be an email address like name@example.com".into()) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password acceptable for a new hash: 8 to 128 characters.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.chars().count() {
            n if n < 8 => Err("must be at least 8 characters".into()),
            n if n > 128 => Err("must be at most 128 characters".into()),
            _ => Ok(Self(raw.to_owned())),
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            tokens::ROLE_USER => Ok(Self::User),
            tokens::ROLE_ADMIN => Ok(Self::Admin),
            _ => Err("must be \"user\" or \"admin\"".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => tokens::ROLE_USER,
            Self::Admin => tokens::ROLE_ADMIN,
        }
    }
}

/// Trimmed; empty means none; at most 100 characters.
pub fn parse_nickname(raw: Option<&str>) -> Result<Option<String>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) if n.chars().count() > 100 => Err("must be at most 100 characters".into()),
        Some(n) => Ok(Some(n.to_owned())),
    }
}

pub struct NewUser {
    pub email: Email,
    pub password: Password,
    pub nickname: Option<String>,
    pub role: Role,
}

impl NewUser {
    pub fn parse(email: &str, password: &str, nickname: Option<&str>, role: Option<&str>) -> Result<Self, ApiError> {
        let mut checks = Checks::default();
        let email = checks.check("email", Email::parse(email));
        let password = checks.check("password", Password::parse(password));
        let nickname = checks.check("nickname", parse_nickname(nickname));
        let role = checks.check("role", role.map_or(Ok(Role::User), Role::parse));
        checks.finish()?;
        Ok(Self {
            email: email.expect("checked"),
            password: password.expect("checked"),
            nickname: nickname.expect("checked"),
            role: role.expect("checked"),
        })
    }
}

/// Inserts a user; a taken email is a 409 `email_taken`.
pub async fn create(db: &impl ConnectionTrait, new: NewUser, now: DateTime<Utc>) -> Result<users::Model, ApiError> {
    let taken = users::Entity::find()
        .filter(users::Column::Email.eq(new.email.as_str()))
        .count(db)
        .await?
        > 0;
    if taken {
        return Err(email_taken());
    }
    let password_hash = auth::hash_password(new.password.into_inner()).await?;
    users::ActiveModel {
        email: Set(new.email.as_str().to_owned()),
        nickname: Set(new.nickname),
        password_hash: Set(password_hash),
        role: Set(new.role.as_str().to_owned()),
        is_admin: Set(new.role == Role::Admin),
        is_active: Set(true),
        created_at: Set(now),
        updated_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
    .map_err(|e| if store::is_unique_violation(&e) { email_taken() } else { e.into() })
}

fn email_taken() -> ApiError {
    ApiError::Conflict { code: "email_taken", message: "an account with this email already exists".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in ["", "ann", "ann@", "@x.io", "a@b", "a b@x.io", "a@x.io.", "a@@x.io"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_user_names_every_bad_field() {
        let Err(ApiError::Validation(fields)) = NewUser::parse("nope", "short", None, Some("root")) else {
            panic!("expected validation error");
        };
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["email", "password", "role"]);
    }
}

/// How long a streaming endpoint trusts its copy of an account (see [`AccountCache`]).
pub const ACCOUNT_CACHE_FOR: Duration = Duration::from_secs(1);
/// Accounts kept at most.
const ACCOUNT_CACHE_SIZE: usize = 4096;

/// Copies of recently seen accounts, so that the endpoints that stream answers do not read the
/// account row again before every first token. A role change or a disabled account through this
/// process applies at once (the admin routes forget the copy); through another instance sharing
/// the database, within [`ACCOUNT_CACHE_FOR`].
pub type AccountCache = crate::recent::Recent<i32, users::Model>;

pub fn account_cache() -> AccountCache {
    AccountCache::new(ACCOUNT_CACHE_FOR, ACCOUNT_CACHE_SIZE)
}
