//! The token lifecycle, cookies, passwords and login throttling over real HTTP.
mod common;

use chrono::Duration;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_all_backends!(
    token_lifecycle,
    refresh_reuse_revokes_family,
    logout_revokes,
    disabled_user_loses_access,
    change_password_revokes_other_sessions,
    registration_follows_setting,
    bcrypt_hash_is_upgraded,
);

async fn token_lifecycle(app: TestApp) {
    app.seed_user("ann@example.com", "ann-password-1", false).await;
    let login = app.post("/api/auth/login", None, json!({"email": "ANN@example.com ", "password": "ann-password-1"})).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.json["token_type"], "Bearer");
    assert_eq!(login.json["expires_in"], 900);
    assert_eq!(login.json["user"]["email"], "ann@example.com");
    assert!(login.json["user"].get("password_hash").is_none());
    let cookie_header = login.set_cookie().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/auth", "Max-Age=604800"] {
        assert!(cookie_header.contains(attribute), "{cookie_header} lacks {attribute}");
    }
    assert!(!cookie_header.contains("Secure"), "plain http must not set Secure");
    let access = login.json["access_token"].as_str().unwrap().to_owned();
    let refresh = login.refresh_cookie().unwrap();

    let me = app.get("/api/auth/me", &access).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["email"], "ann@example.com");

    // 15 minutes later the access token is refused; the refresh token gets a new pair.
    app.clock.advance(Duration::minutes(15));
    let expired = app.get("/api/auth/me", &access).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.error_code(), "unauthorized");
    let refreshed = app.with_cookie("/api/auth/refresh", &refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let new_refresh = refreshed.refresh_cookie().unwrap();
    assert_ne!(new_refresh, refresh, "refresh rotates the token");
    let new_access = refreshed.json["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/auth/me", new_access).await.status, StatusCode::OK);

    // Refresh tokens expire after 7 days.
    app.clock.advance(Duration::days(7) + Duration::seconds(1));
    let late = app.with_cookie("/api/auth/refresh", &new_refresh).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    assert!(late.set_cookie().unwrap().contains("Max-Age=0"), "a refused cookie is cleared");

    // Garbage tokens.
    assert_eq!(app.get("/api/auth/me", "not-a-jwt").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.call(Method::GET, "/api/auth/me", None, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.with_cookie("/api/auth/refresh", "deadbeef").await.status, StatusCode::UNAUTHORIZED);
}

async fn refresh_reuse_revokes_family(app: TestApp) {
    app.seed_user("bob@example.com", "bob-password-1", false).await;
    let (_, first) = app.login("bob@example.com", "bob-password-1").await;
    let (_, other_login) = app.login("bob@example.com", "bob-password-1").await;
    let second = app.with_cookie("/api/auth/refresh", &first).await.refresh_cookie().unwrap();
    // The rotated-out token comes back: an attacker holds a copy.
    let reuse = app.with_cookie("/api/auth/refresh", &first).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    assert!(reuse.json["error"]["message"].as_str().unwrap().contains("reuse"));
    // The whole family is gone, including the legitimate newest token...
    assert_eq!(app.with_cookie("/api/auth/refresh", &second).await.status, StatusCode::UNAUTHORIZED);
    // ...but another login's family is untouched.
    assert_eq!(app.with_cookie("/api/auth/refresh", &other_login).await.status, StatusCode::OK);
}

async fn logout_revokes(app: TestApp) {
    app.seed_user("cat@example.com", "cat-password-1", false).await;
    let (_, refresh) = app.login("cat@example.com", "cat-password-1").await;
    let out = app.with_cookie("/api/auth/logout", &refresh).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out.set_cookie().unwrap();
    assert!(cleared.starts_with("refresh_token=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(app.with_cookie("/api/auth/refresh", &refresh).await.status, StatusCode::UNAUTHORIZED);
    // Logging out without a cookie is harmless.
    assert_eq!(app.call(Method::POST, "/api/auth/logout", None, None).await.status, StatusCode::NO_CONTENT);
}

async fn disabled_user_loses_access(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app.seed_user("dan@example.com", "dan-password-1", false).await;
    let (access, refresh) = app.login("dan@example.com", "dan-password-1").await;
    let res = app.call(Method::PATCH, &format!("/api/admin/users/{id}"), Some(&admin), Some(json!({"is_active": false}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.json["is_active"], false);
    assert_eq!(app.get("/api/auth/me", &access).await.status, StatusCode::UNAUTHORIZED, "access token dies at once");
    assert_eq!(app.with_cookie("/api/auth/refresh", &refresh).await.status, StatusCode::UNAUTHORIZED);
    let login = app.post("/api/auth/login", None, json!({"email": "dan@example.com", "password": "dan-password-1"})).await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert_eq!(login.error_code(), "account_disabled");
    // Re-enabled, the account works again.
    app.call(Method::PATCH, &format!("/api/admin/users/{id}"), Some(&admin), Some(json!({"is_active": true}))).await;
    app.login("dan@example.com", "dan-password-1").await;
}

async fn change_password_revokes_other_sessions(app: TestApp) {
    app.seed_user("eve@example.com", "eve-password-1", false).await;
    let (access, _) = app.login("eve@example.com", "eve-password-1").await;
    let (_, other_device) = app.login("eve@example.com", "eve-password-1").await;
    let path = "/api/auth/password";
    let wrong = app.call(Method::PUT, path, Some(&access), Some(json!({"current_password": "nope-nope", "new_password": "eve-password-2"}))).await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.json["error"]["fields"]["current_password"].is_string());
    let short = app.call(Method::PUT, path, Some(&access), Some(json!({"current_password": "eve-password-1", "new_password": "short"}))).await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.json["error"]["fields"]["new_password"].is_string());
    let ok = app.call(Method::PUT, path, Some(&access), Some(json!({"current_password": "eve-password-1", "new_password": "eve-password-2"}))).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.body);
    let this_session = ok.refresh_cookie().expect("this session gets a fresh cookie");
    assert_eq!(app.with_cookie("/api/auth/refresh", &other_device).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.with_cookie("/api/auth/refresh", &this_session).await.status, StatusCode::OK);
    let old = app.post("/api/auth/login", None, json!({"email": "eve@example.com", "password": "eve-password-1"})).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    app.login("eve@example.com", "eve-password-2").await;
}

async fn registration_follows_setting(app: TestApp) {
    let body = json!({"email": "new@example.com", "password": "new-password-1", "nickname": "New"});
    let closed = app.post("/api/auth/register", None, body.clone()).await;
    assert_eq!(closed.status, StatusCode::FORBIDDEN);
    assert_eq!(closed.error_code(), "registration_closed");
    let admin = app.admin_token().await;
    let res = app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"registration_open": true}))).await;
    assert_eq!(res.status, StatusCode::OK);
    let open = app.post("/api/auth/register", None, body.clone()).await;
    assert_eq!(open.status, StatusCode::CREATED, "{}", open.body);
    assert_eq!(open.json["role"], "user");
    assert_eq!(open.json["is_admin"], false);
    let again = app.post("/api/auth/register", None, json!({"email": "NEW@example.com", "password": "new-password-1"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "email_taken");
    let bad = app.post("/api/auth/register", None, json!({"email": "nope", "password": "x"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.json["error"]["fields"]["email"].is_string() && bad.json["error"]["fields"]["password"].is_string());
}

async fn bcrypt_hash_is_upgraded(app: TestApp) {
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    use store::entities::users;
    let id = app.seed_user("old@example.com", "placeholder-1", false).await;
    let legacy = bcrypt::hash("legacy-password", 4).unwrap();
    assert!(legacy.starts_with("$2b$"));
    let mut user = users::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap().into_active_model();
    user.password_hash = Set(legacy);
    user.update(&app.state.db).await.unwrap();
    app.login("old@example.com", "legacy-password").await;
    let stored = users::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap().password_hash;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    app.login("old@example.com", "legacy-password").await;
}

#[tokio::test]
async fn login_is_rate_limited_per_account_and_per_address() {
    let app = TestApp::spawn_with(common::Backend::Sqlite, |s| {
        s.auth.login_failures_per_email = 3;
        s.auth.login_attempts_per_ip = 8;
        s.auth.login_window_secs = 60;
    })
    .await;
    app.seed_user("fay@example.com", "fay-password-1", false).await;
    let attempt = |password: &'static str| app.post("/api/auth/login", None, json!({"email": "fay@example.com", "password": password}));
    for _ in 0..3 {
        assert_eq!(attempt("wrong-password").await.status, StatusCode::UNAUTHORIZED);
    }
    let locked = attempt("fay-password-1").await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert_eq!(locked.error_code(), "too_many_requests");
    let retry: i64 = locked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    app.clock.advance(Duration::seconds(61));
    assert_eq!(attempt("fay-password-1").await.status, StatusCode::OK);
    // Per address: 8 attempts in a window, whatever the account. The window restarted with the
    // successful attempt above, so 7 more are allowed.
    for i in 0..7 {
        let res = app.post("/api/auth/login", None, json!({"email": format!("x{i}@example.com"), "password": "whatever-1"})).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = app.post("/api/auth/login", None, json!({"email": "y@example.com", "password": "whatever-1"})).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn secure_cookie_behind_https_proxy() {
    let app = TestApp::spawn(common::Backend::Sqlite).await;
    app.seed_user(ADMIN_EMAIL, ADMIN_PASSWORD, true).await;
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}
