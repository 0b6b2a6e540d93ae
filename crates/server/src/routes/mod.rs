//! Handlers, one module per resource.
pub mod admin;
pub mod auth;
pub mod ops;
