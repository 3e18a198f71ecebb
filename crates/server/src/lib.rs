//! The Atelier server: the HTTP layer (the ModelArts API, authentication, metrics, the
//! console) over the control plane (`atelier_control`), and the composition root.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod identity;
#[cfg(test)]
mod layering;
pub mod metrics;
pub mod openapi;
pub mod render;
pub mod routes;
pub mod runtimes;
pub mod state;

pub use app::{App, AppParts};
/// The injected clock, where the server's tests and embedders have always found it.
pub use atelier_control::clock;
pub use config::{Config, ConfigOverrides};
pub use state::AppState;
