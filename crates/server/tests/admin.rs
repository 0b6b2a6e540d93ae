//! Admin user management and settings: role enforcement, last-admin protection, search.
mod common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_all_backends!(
    every_admin_route_refuses_users,
    create_list_search_paginate,
    last_active_admin_is_protected,
    reset_password_revokes_sessions,
    settings_round_trip_masks_secrets,
);

async fn every_admin_route_refuses_users(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, user) = app.user_token("user@example.com").await;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/admin/users".into(), None),
        (Method::POST, "/api/admin/users".into(), Some(json!({"email": "x@example.com", "password": "x-password-1"}))),
        (Method::GET, format!("/api/admin/users/{user_id}"), None),
        (Method::PATCH, format!("/api/admin/users/{user_id}"), Some(json!({"role": "admin"}))),
        (Method::PUT, format!("/api/admin/users/{user_id}/password"), Some(json!({"new_password": "y-password-1"}))),
        (Method::GET, "/api/admin/settings".into(), None),
        (Method::PATCH, "/api/admin/settings".into(), Some(json!({"registration_open": true}))),
    ];
    for (method, path, body) in &routes {
        let as_user = app.call(method.clone(), path, Some(&user), body.clone()).await;
        assert_eq!(as_user.status, StatusCode::FORBIDDEN, "{method} {path} as user: {}", as_user.body);
        assert_eq!(as_user.error_code(), "forbidden");
        let anonymous = app.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{method} {path} anonymous");
    }
    for (method, path, body) in routes {
        let as_admin = app.call(method.clone(), &path, Some(&admin), body).await;
        assert!(as_admin.status.is_success(), "{method} {path} as admin: {} {}", as_admin.status, as_admin.body);
    }
    // The role is read per request: the promotion above applies to the token already issued.
    let me = app.get("/api/auth/me", &user).await;
    assert_eq!(me.json["role"], "admin");
    assert_eq!(me.json["is_admin"], true);
    assert_eq!(app.get("/api/admin/users", &user).await.status, StatusCode::OK);
}

async fn create_list_search_paginate(app: TestApp) {
    let admin = app.admin_token().await;
    for (email, nick) in [("alice@example.com", "Alice"), ("bob@corp.io", "Bobby"), ("carol@example.com", "100%_real")] {
        let res = app.post("/api/admin/users", Some(&admin), json!({"email": email, "password": "pass-word-1", "nickname": nick})).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
        assert_eq!(res.json["role"], "user");
    }
    let dup = app.post("/api/admin/users", Some(&admin), json!({"email": "ALICE@example.com", "password": "pass-word-1"})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = app.post("/api/admin/users", Some(&admin), json!({"email": "x", "password": "1", "role": "root"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = bad.json["error"]["fields"].as_object().unwrap();
    assert!(fields.contains_key("email") && fields.contains_key("password") && fields.contains_key("role"), "{fields:?}");

    let all = app.get("/api/admin/users?page_size=2", &admin).await;
    assert_eq!(all.json["total"], 4);
    assert_eq!(all.json["items"].as_array().unwrap().len(), 2);
    assert_eq!(all.json["page_size"], 2);
    let page2 = app.get("/api/admin/users?page=2&page_size=2", &admin).await;
    assert_eq!(page2.json["items"].as_array().unwrap().len(), 2);
    assert_ne!(all.json["items"][0]["id"], page2.json["items"][0]["id"]);

    let by_email = app.get("/api/admin/users?q=EXAMPLE.com", &admin).await;
    assert_eq!(by_email.json["total"], 3, "{}", by_email.body); // admin, alice, carol
    let by_nick = app.get("/api/admin/users?q=bobb", &admin).await;
    assert_eq!(by_nick.json["total"], 1);
    assert_eq!(by_nick.json["items"][0]["email"], "bob@corp.io");
    let literal = app.get("/api/admin/users?q=0%25_", &admin).await; // "0%_" must match literally
    assert_eq!(literal.json["total"], 1, "{}", literal.body);

    for query in ["page=0", "page_size=0", "page_size=101", "page=abc"] {
        let res = app.get(&format!("/api/admin/users?{query}"), &admin).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {}", res.body);
    }
    assert_eq!(app.get("/api/admin/users/999999", &admin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/admin/users/abc", &admin).await.status, StatusCode::BAD_REQUEST);
}

async fn last_active_admin_is_protected(app: TestApp) {
    let admin = app.admin_token().await;
    let me = app.get("/api/auth/me", &admin).await.json["id"].as_i64().unwrap();
    let path = format!("/api/admin/users/{me}");
    for change in [json!({"role": "user"}), json!({"is_active": false})] {
        let res = app.call(Method::PATCH, &path, Some(&admin), Some(change)).await;
        assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
        assert_eq!(res.error_code(), "last_admin");
    }
    // With a second active admin, the first may step down.
    let second = app.seed_user("second@example.com", "second-pass-1", true).await;
    let res = app.call(Method::PATCH, &path, Some(&admin), Some(json!({"role": "user"}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.json["is_admin"], false);
    assert_eq!(res.json["role"], "user");
    // Now the second is the last one; a disabled admin does not count.
    let (second_token, _) = app.login("second@example.com", "second-pass-1").await;
    let res = app.call(Method::PATCH, &format!("/api/admin/users/{second}"), Some(&second_token), Some(json!({"is_active": false}))).await;
    assert_eq!(res.error_code(), "last_admin");
    // The demoted first admin lost admin rights at once.
    assert_eq!(app.get("/api/admin/users", &admin).await.status, StatusCode::FORBIDDEN);
    let bad = app.call(Method::PATCH, &path, Some(&second_token), Some(json!({"role": "owner", "nickname": "x".repeat(101)}))).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.json["error"]["fields"].as_object().unwrap().len(), 2);
}

async fn reset_password_revokes_sessions(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app.seed_user("gus@example.com", "gus-password-1", false).await;
    let (_, refresh) = app.login("gus@example.com", "gus-password-1").await;
    let path = format!("/api/admin/users/{id}/password");
    let short = app.call(Method::PUT, &path, Some(&admin), Some(json!({"new_password": "short"}))).await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let ok = app.call(Method::PUT, &path, Some(&admin), Some(json!({"new_password": "gus-password-2"}))).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    assert_eq!(app.with_cookie("/api/auth/refresh", &refresh).await.status, StatusCode::UNAUTHORIZED);
    app.login("gus@example.com", "gus-password-2").await;
    let missing = app.call(Method::PUT, "/api/admin/users/424242/password", Some(&admin), Some(json!({"new_password": "gus-password-3"}))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn settings_round_trip_masks_secrets(app: TestApp) {
    let admin = app.admin_token().await;
    let initial = app.get("/api/admin/settings", &admin).await;
    assert_eq!(initial.json, json!({"registration_open": false, "allow_private_provider_urls": false,
        "swanlab": {"mode": "disabled", "project": null, "workspace": null, "api_key_masked": null}}));
    let patch = json!({"allow_private_provider_urls": true,
        "swanlab": {"mode": "offline", "project": "wb", "api_key": "swan-secret-key-123456"}});
    let res = app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(patch)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(!res.body.contains("swan-secret-key-123456"));
    assert_eq!(res.json["swanlab"]["api_key_masked"], "swa…3456");
    assert_eq!(res.json["swanlab"]["mode"], "offline");
    assert_eq!(res.json["allow_private_provider_urls"], true);
    let again = app.get("/api/admin/settings", &admin).await;
    assert_eq!(again.json, res.json);
    assert!(!again.body.contains("swan-secret"));
    let bad = app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"swanlab": {"mode": "cloud"}}))).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let unknown = app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"colour": "red"}))).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
}
