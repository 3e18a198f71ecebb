//! Integration tests: the real server over HTTP, one binary, files mirroring the URL space.
//!
//! | file            | URLs                                                        |
//! |-----------------|-------------------------------------------------------------|
//! | `notebook/`     | `/v1/{project}/notebooks[/all]`, `/notebooks/{id}[/start|/stop|/create-image]` |
//! | `console`       | `/console`, `/console/session`                              |
//! | `events`        | `/notebooks/{id}/events`, `/notebooks/{id}/progress` (SSE)  |
//! | `lease`         | `/notebooks/{id}/lease`, the lease keeper, restarts         |
//! | `flavor`        | `/notebooks/flavors`, `/notebooks/{id}/flavors`             |
//! | `feature`       | `/authoring/features/{feature}`                             |
//! | `iam`           | `/v3/projects`, `/v3/auth/projects` (project discovery)     |
//! | `tag`           | `/notebooks/{id}/tags/{create,delete}`, `/notebooks/tags`   |
//! | `image`         | `/images[/{id}]`, `/images/group`                           |
//! | `registry`      | `POST /images` of container images in a real registry       |
//! | `auth`          | signatures, tokens, project scope (every path)              |
//! | `metrics`       | `/metrics` (Prometheus text)                                |
//! | `openapi`       | `/openapi.json`                                             |
//! | `restart`       | a control plane restarted on the same data dir              |
//! | `local`         | real JupyterLab in bubblewrap: `/{id}/…` on the gateway     |
//! | `containment`   | a hostile tenant's probes from inside a real sandbox        |
//! | `ssh`           | `/keypairs[/{name}]`, SSH endpoints with real `ssh`/`sftp`  |
//! | `storage`       | `/notebooks/{id}/storage[/{storage_id}]` (dynamic storage)   |
//! | `hooks`         | `hooks` of create/update: checks, and real hooks in sandboxes |
// Tests read their switches from the environment and time real processes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

mod auth;
mod console;
mod containment;
mod events;
mod feature;
mod flavor;
mod hooks;
mod iam;
mod image;
mod lease;
mod local;
mod metrics;
mod notebook;
mod openapi;
mod registry;
mod restart;
mod ssh;
mod storage;
mod storage_local;
mod tag;
