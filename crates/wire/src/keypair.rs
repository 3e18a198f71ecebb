//! SSH key pairs: an Atelier extension (ModelArts takes key pairs from the ECS/DEW key-pair
//! service; the request and response shapes follow that service's `keypair` envelope).
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/{project_id}/keypairs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeypairCreateRequest {
    pub keypair: KeypairCreate,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeypairCreate {
    /// 1–64 letters, digits, `-`, `_`, `.`; unique in the project.
    pub name: Option<String>,
    /// An OpenSSH public key line (ed25519, ECDSA, or RSA ≥ 2048 bits). Absent: Atelier
    /// generates an ed25519 pair and returns the private key once.
    #[serde(default)]
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeypairResponse {
    pub keypair: Keypair,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Keypair {
    pub name: String,
    /// Always `ssh`.
    #[serde(rename = "type")]
    pub kind: String,
    pub algorithm: String,
    pub public_key: String,
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Only in the response to a create that generated the pair; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    pub create_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeypairList {
    pub keypairs: Vec<KeypairResponse>,
    pub total: i64,
}
