//! The OpenAPI 3.1 document, generated from the handlers' annotations.
use std::sync::OnceLock;

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::routes::{
    admin, auth, chat, comparisons, datasets, model_configs, models, prompts, providers, training_configs, training_tasks,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "LLM Workbench API", description = "Providers, playground, comparison and LoRA training. Errors: `{\"error\": {\"code\", \"message\", \"fields\"?}}`."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me, auth::change_password,
        admin::list_users, admin::create_user, admin::get_user, admin::update_user, admin::reset_password,
        admin::get_settings, admin::update_settings,
        providers::list, providers::create, providers::get, providers::update, providers::delete,
        providers::test, providers::sync, providers::list_models, providers::update_model,
        model_configs::list, model_configs::create, model_configs::get, model_configs::update, model_configs::delete,
        chat::list_sessions, chat::create_session, chat::get_session, chat::update_session, chat::delete_session,
        chat::list_messages, chat::send_message, chat::regenerate, chat::edit_message, chat::stop, chat::export,
        comparisons::create, comparisons::list, comparisons::get, comparisons::delete, comparisons::rerun, comparisons::export,
        prompts::list_system, prompts::create_system, prompts::get_system, prompts::update_system, prompts::delete_system,
        prompts::list_test, prompts::create_test, prompts::get_test, prompts::update_test, prompts::delete_test,
        models::list, models::get, models::create, models::update, models::delete, models::scan, models::model_config,
        training_tasks::list, training_tasks::create, training_tasks::get, training_tasks::delete,
        training_tasks::cancel, training_tasks::events, training_tasks::log,
        datasets::list, datasets::upload, datasets::import, datasets::get, datasets::update, datasets::delete,
        datasets::preview, datasets::stats, datasets::download,
        training_configs::list_presets, training_configs::list, training_configs::create, training_configs::get,
        training_configs::update, training_configs::delete,
    ),
    components(schemas(chat::MetaEvent, chat::DoneEvent, crate::training::events::StepMetrics)),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Login and tokens"), (name = "admin", description = "User management and settings"),
        (name = "providers", description = "Model providers, their model lists and connection tests"),
        (name = "model-configs", description = "Each user's own model parameters"),
        (name = "chat", description = "Playground sessions; answers stream as server-sent events"),
        (name = "comparisons", description = "One input to several models at once, streamed side by side"),
        (name = "prompts", description = "System prompts and test prompts"),
        (name = "datasets", description = "Training datasets: upload (validated), import, preview, statistics, download"),
        (name = "training", description = "LoRA training configs and presets; training tasks: queue, cancel, live progress (server-sent events), log"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Rendered once: the document only changes with the code.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("OpenAPI document serialises"))
}
