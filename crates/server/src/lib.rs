//! The Atelier server: the ModelArts API, the orchestrator and the lease keeper.
#![forbid(unsafe_code)]

pub mod app;
pub mod clock;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod identity;
pub mod lease_keeper;
pub mod metrics;
pub mod openapi;
pub mod orchestrator;
pub mod render;
pub mod routes;
pub mod runtimes;
pub mod service;
pub mod ssh;

pub use app::{App, AppParts, AppState};
pub use config::{Config, ConfigOverrides};
