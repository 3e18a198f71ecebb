//! The Atelier control plane: the notebook index and its writes, the orchestrator that carries
//! operations out through a `Runtime`, the lease keeper, SSH endpoints and the counters they
//! keep. **Architecture Invariant:** no HTTP here (no axum, tower or hyper); errors are
//! [`ControlError`], which the server maps to its HTTP error at its edge.
#![forbid(unsafe_code)]

pub mod activity;
pub mod clock;
pub mod error;
pub mod gateway;
pub mod hooks;
pub mod lease_keeper;
pub mod metrics;
pub mod operations;
pub mod orchestrator;
pub mod service;
pub mod ssh;
pub mod storage;

pub use error::ControlError;
