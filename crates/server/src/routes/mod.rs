//! Handlers, one module per resource.
pub mod admin;
pub mod auth;
pub mod chat;
pub mod comparisons;
pub mod datasets;
pub mod model_configs;
pub mod models;
pub mod ops;
pub mod prompts;
pub mod providers;
pub mod training_tasks;
pub mod training_configs;
