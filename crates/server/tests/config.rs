//! Configuration layering and generated secrets.
mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Backend, TestApp};
use server::config::Settings;

#[test]
fn environment_overrides_file_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workbench.toml");
    std::fs::write(&file, "[server]\nbind = \"127.0.0.1:9000\"\n[auth]\nregistration_open = true\naccess_token_ttl_secs = 60\n").unwrap();
    // figment reads the process environment; a variable set only for this test's keys.
    unsafe { std::env::set_var("WORKBENCH__AUTH__ACCESS_TOKEN_TTL_SECS", "120") };
    let settings = Settings::load(Some(&file), Some(dir.path())).unwrap();
    unsafe { std::env::remove_var("WORKBENCH__AUTH__ACCESS_TOKEN_TTL_SECS") };
    assert_eq!(settings.server.bind.port(), 9000);
    assert!(settings.auth.registration_open);
    assert_eq!(settings.auth.access_token_ttl_secs, 120);
    assert_eq!(settings.auth.refresh_token_ttl_secs, 7 * 24 * 3600);
    assert_eq!(settings.data_dir, dir.path());
    assert!(settings.database_url().starts_with("sqlite://"));

    std::fs::write(&file, "[server]\nbind = \"not an address\"\n").unwrap();
    let err = Settings::load(Some(&file), None).unwrap_err().to_string();
    assert!(err.contains("bind"), "{err}");
}

#[tokio::test]
async fn secrets_are_generated_once_private_and_reused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = app.state.settings.data_dir.clone();
    let token = app.admin_token().await;
    for name in ["jwt.secret", "encryption.key"] {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    let key_before = std::fs::read(dir.join("encryption.key")).unwrap();
    // A second server on the same data directory accepts tokens signed by the first.
    let mut settings = (*app.state.settings).clone();
    settings.database.url = String::new();
    let again = server::build_state(settings, std::sync::Arc::new(server::clock::SystemClock)).await.unwrap();
    assert!(again.tokens.verify_access(&token, server::clock::Clock::now(&app.clock)).is_ok());
    assert_eq!(std::fs::read(dir.join("encryption.key")).unwrap(), key_before);
}

#[tokio::test]
async fn bootstrap_admin_is_created_once() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.auth.bootstrap_admin_email = Some("root@example.com".into());
        s.auth.bootstrap_admin_password = Some("root-password-1".to_owned().into());
    })
    .await;
    let (token, _) = app.login("root@example.com", "root-password-1").await;
    let me = app.get("/api/auth/me", &token).await;
    assert_eq!(me.json["role"], "admin");
    assert_eq!(me.json["is_admin"], true);
}
