//! Training configs over real HTTP: defaults and presets, field-level validation with ranges,
//! partial updates, delete while in use, and other users' configs not existing.
mod common;

use common::{Response, TestApp};
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{Value, json};
use store::entities::training_tasks;

on_all_backends!(
    defaults_and_presets_fill_every_parameter,
    bad_parameters_are_named_with_their_ranges,
    updates_change_only_what_is_given,
    delete_is_refused_while_in_use_and_others_get_404,
);

fn fields(res: &Response) -> Vec<String> {
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    res.json["error"]["fields"].as_object().expect("fields").keys().cloned().collect()
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post("/api/training-configs", Some(token), body).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    res.json
}

async fn defaults_and_presets_fill_every_parameter(app: TestApp) {
    let (user, token) = app.user_token("ann@example.com").await;
    let c = create(&app, &token, json!({"name": "  defaults  "})).await;
    assert_eq!(c["name"], "defaults");
    assert_eq!(c["created_by"], user);
    assert_eq!(
        c["params"],
        json!({"learning_rate": 0.0002, "epochs": 3, "batch_size": 4, "gradient_accumulation": 1, "max_seq_length": 512,
            "lora_r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "warmup_ratio": null, "warmup_steps": 0, "scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0,
            "seed": 42, "rslora": false})
    );

    let presets = app.get("/api/training-configs/presets", &token).await;
    assert_eq!(presets.status, StatusCode::OK);
    let ids: Vec<&str> = presets.json.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["quick_test", "balanced", "quality"]);
    for preset in presets.json.as_array().unwrap() {
        let c = create(&app, &token, json!({"name": preset["name"], "preset": preset["id"]})).await;
        assert_eq!(c["params"], preset["params"], "{}", preset["id"]);
    }
    // A preset with changes on top; target modules are kept in the canonical order.
    let c = create(
        &app,
        &token,
        json!({"name": "mine", "preset": "quality", "params": {"epochs": 2, "target_modules": ["v_proj", "q_proj"], "rslora": true}}),
    )
    .await;
    assert_eq!((c["params"]["epochs"].as_i64(), c["params"]["lora_r"].as_i64()), (Some(2), Some(32)));
    assert_eq!(c["params"]["target_modules"], json!(["q_proj", "v_proj"]));
    assert_eq!(c["params"]["rslora"], true);

    let list = app.get("/api/training-configs", &token).await;
    assert_eq!(list.json["total"], 5);
    assert_eq!(list.json["items"][0]["name"], "mine", "newest first");
    assert_eq!(app.get("/api/training-configs?q=MIN", &token).await.json["total"], 1);
    let got = app.get(&format!("/api/training-configs/{}", c["id"]), &token).await;
    assert_eq!(got.json, c);
}

async fn bad_parameters_are_named_with_their_ranges(app: TestApp) {
    let (_, token) = app.user_token("ann@example.com").await;
    let res = app
        .post(
            "/api/training-configs",
            Some(&token),
            json!({"name": "", "preset": "turbo", "params": {"learning_rate": -1, "epochs": 0}}),
        )
        .await;
    assert_eq!(fields(&res), ["name", "preset"], "the params are checked against a known starting point");

    let res = app
        .post(
            "/api/training-configs",
            Some(&token),
            json!({"name": "bad", "params": {
                "learning_rate": 0, "epochs": 2.5, "batch_size": 0, "gradient_accumulation": 5000, "max_seq_length": 8,
                "lora_r": 512, "lora_alpha": 0, "lora_dropout": 1, "target_modules": ["q_proj", "lm_head"],
                "scheduler": "step", "weight_decay": 2, "max_grad_norm": -1, "seed": -3}}),
        )
        .await;
    assert_eq!(
        fields(&res),
        [
            "params.batch_size", "params.epochs", "params.gradient_accumulation", "params.learning_rate", "params.lora_alpha",
            "params.lora_dropout", "params.lora_r", "params.max_grad_norm", "params.max_seq_length", "params.scheduler",
            "params.seed", "params.target_modules", "params.weight_decay",
        ]
    );
    let f = &res.json["error"]["fields"];
    assert_eq!(f["params.epochs"], "must be a whole number from 1 to 100");
    assert_eq!(f["params.lora_r"], "must be a whole number from 1 to 256");
    assert_eq!(f["params.lora_dropout"], "must be at least 0 and less than 1");
    assert!(f["params.target_modules"].as_str().unwrap().contains("lm_head"));
    assert!(f["params.scheduler"].as_str().unwrap().contains("cosine, linear, constant"));

    let checks = [
        (json!({"target_modules": []}), "params.target_modules"),
        (json!({"target_modules": ["q_proj", "q_proj"]}), "params.target_modules"),
        (json!({"warmup_ratio": 0.1, "warmup_steps": 10}), "params.warmup_steps"),
        (json!({"warmup_ratio": 0.9}), "params.warmup_ratio"),
        (json!({"warmup_steps": -1}), "params.warmup_steps"),
        // Wrong types and unknown fields are named too.
        (json!({"epochs": "three"}), "params.epochs"),
        (json!({"rslora": "yes"}), "params.rslora"),
        (json!({"learning_rate_typo": 1}), "params"),
    ];
    for (params, field) in checks {
        let res = app.post("/api/training-configs", Some(&token), json!({"name": "x", "params": params})).await;
        let keys = fields(&res);
        assert!(keys.iter().any(|k| k.starts_with(field)), "{params}: {keys:?} {}", res.body);
    }
    assert_eq!(app.get("/api/training-configs", &token).await.json["total"], 0, "nothing invalid stored");
}

async fn updates_change_only_what_is_given(app: TestApp) {
    let (_, token) = app.user_token("ann@example.com").await;
    let c = create(&app, &token, json!({"name": "base", "preset": "balanced"})).await;
    let path = format!("/api/training-configs/{}", c["id"]);
    let res = app.call(Method::PATCH, &path, Some(&token), Some(json!({"params": {"epochs": 7, "warmup_steps": 20}}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let mut want = c["params"].clone();
    want["epochs"] = json!(7);
    want["warmup_steps"] = json!(20);
    want["warmup_ratio"] = Value::Null;
    assert_eq!(res.json["params"], want);
    assert_eq!(res.json["name"], "base");
    assert!(res.json["updated_at"].is_string());

    let res = app.call(Method::PATCH, &path, Some(&token), Some(json!({"name": "renamed", "params": {"warmup_ratio": 0.1}}))).await;
    assert_eq!((res.json["name"].as_str(), res.json["params"]["warmup_ratio"].as_f64()), (Some("renamed"), Some(0.1)));
    assert!(res.json["params"]["warmup_steps"].is_null());

    let res = app.call(Method::PATCH, &path, Some(&token), Some(json!({"params": {"lora_r": 0}}))).await;
    assert_eq!(fields(&res), ["params.lora_r"]);
    assert_eq!(app.get(&path, &token).await.json["params"]["lora_r"], 16, "unchanged after a refused update");
}

async fn delete_is_refused_while_in_use_and_others_get_404(app: TestApp) {
    let (_, ann) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;
    let c = create(&app, &ann, json!({"name": "ann's"})).await;
    let path = format!("/api/training-configs/{}", c["id"]);

    for token in [&bob] {
        assert_eq!(app.get(&path, token).await.status, StatusCode::NOT_FOUND);
        let res = app.call(Method::PATCH, &path, Some(token), Some(json!({"params": {"lora_r": 0}}))).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "404 before the body is judged");
        assert_eq!(app.call(Method::DELETE, &path, Some(token), None).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.get("/api/training-configs", token).await.json["total"], 0);
    }

    let task = training_tasks::ActiveModel {
        name: Set("task".into()),
        model_name: Set("base".into()),
        config_id: Set(Some(c["id"].as_i64().unwrap() as i32)),
        status: Set("running".into()),
        progress: Set(0.5),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let res = app.call(Method::DELETE, &path, Some(&ann), None).await;
    assert_eq!((res.status, res.error_code()), (StatusCode::CONFLICT, "config_in_use"), "{}", res.body);
    let mut done: training_tasks::ActiveModel = task.into();
    done.status = Set("failed".into());
    done.update(&app.state.db).await.unwrap();
    assert_eq!(app.call(Method::DELETE, &path, Some(&ann), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &ann).await.status, StatusCode::NOT_FOUND);
}
