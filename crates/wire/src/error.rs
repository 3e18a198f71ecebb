use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The one error body every client parses (spec §4.1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// e.g. `ModelArts.6309`
    pub error_code: String,
    pub error_msg: String,
}
