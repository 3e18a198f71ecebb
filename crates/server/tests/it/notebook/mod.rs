//! `/v1/{project_id}/notebooks…`: spec §1.2 #1–#8.

mod create;
mod delete;
mod errors;
mod list;
mod start_stop;
mod state_machine;
mod update;
