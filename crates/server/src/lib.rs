//! The Atelier server: the ModelArts API, the orchestrator and the lease keeper.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod identity;
pub mod metrics;
pub mod openapi;
pub mod render;
pub mod routes;

pub use app::{App, AppParts, AppState};
pub use atelier_control::{clock, lease_keeper, orchestrator, service, ssh};
pub use config::{Config, ConfigOverrides};
