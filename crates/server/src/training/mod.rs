//! LoRA training: hyper-parameters (and, beside them, the task queue and worker).
pub mod params;
