//! One module per table.
pub mod users;
pub mod refresh_tokens;
pub mod app_settings;
pub mod model_providers;
pub mod provider_models;
pub mod model_configs;
pub mod models;
pub mod model_tests;
pub mod model_playground_chats;
pub mod chat_sessions;
pub mod chat_messages;
pub mod system_prompts;
pub mod test_prompts;
pub mod datasets;
pub mod training_configs;
pub mod training_tasks;
