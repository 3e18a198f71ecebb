//! `GET /v1/{project_id}/authoring/features/{feature}` (ListFeatures, spec §1.3 #30): whether a
//! feature is on for the caller, its quota and how much of it is used.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeatureResp {
    /// Stable per project and feature (32 hex).
    pub id: String,
    /// The feature, `NOTEBOOK`.
    pub name: String,
    /// Always true: the feature is on for every project.
    pub enabled: bool,
    /// How many notebooks of the feature the project may have; -1: no limit.
    pub quota: i64,
    /// How many notebooks of the feature the project has.
    pub used: i64,
    /// The caller.
    pub user_id: String,
    /// When the project was created (epoch ms).
    pub create_at: i64,
    /// When the feature's settings last changed (epoch ms): they never change, so
    /// `create_at`.
    pub update_at: i64,
}
