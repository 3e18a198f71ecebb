//! `/v1/{project_id}/notebooks…`: spec §1.2 #1–#8, and `…/{id}/create-image` (#20).

mod create;
mod create_image;
mod delete;
mod errors;
mod list;
mod start_stop;
mod state_machine;
mod update;
