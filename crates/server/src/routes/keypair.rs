//! SSH key pairs: an Atelier extension (spec, Atelier decision 10). A project registers
//! public keys by name; notebooks' SSH endpoints name them in `key_pair_names`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use atelier_domain::KeyPair;
use atelier_domain::keypair::{check_public_key, generate, valid_name};
use atelier_store::StoreError;
use atelier_wire::{ErrorBody, Keypair, KeypairCreateRequest, KeypairList, KeypairResponse};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::identity::Caller;
use crate::state::AppState;

fn render(keypair: &KeyPair, private_key: Option<String>) -> KeypairResponse {
    KeypairResponse {
        keypair: Keypair {
            name: keypair.name.clone(),
            kind: "ssh".to_owned(),
            algorithm: keypair.algorithm.clone(),
            public_key: keypair.public_key.clone(),
            fingerprint: keypair.fingerprint.clone(),
            private_key,
            create_at: keypair.create_at,
        },
    }
}

fn checked_name(name: &str) -> Result<&str, ApiError> {
    if valid_name(name) {
        Ok(name)
    } else {
        Err(ApiError::BadValue("keypair.name".to_owned()))
    }
}

/// Register a public key under a name, or generate an ed25519 pair (the private key is in
/// this response only). Atelier extension.
#[utoipa::path(post, path = "/v1/{project_id}/keypairs", tag = "keypair (Atelier extension)",
    params(("project_id" = String, Path)),
    request_body = KeypairCreateRequest,
    responses((status = 200, body = KeypairResponse), (status = 400, body = ErrorBody)))]
pub async fn create_keypair(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<KeypairCreateRequest>,
) -> Result<Json<KeypairResponse>, ApiError> {
    let name = body
        .keypair
        .name
        .as_deref()
        .ok_or_else(|| ApiError::MissingField("keypair.name".to_owned()))?;
    let name = checked_name(name)?;
    let (private_key, checked) = match body.keypair.public_key.as_deref() {
        Some(text) => (
            None,
            check_public_key(text).map_err(ApiError::BadPublicKey)?,
        ),
        None => {
            let (private, public) = generate(name).map_err(|e| {
                ApiError::internal(std::io::Error::other(format!("key generation: {e}")))
            })?;
            (Some(private), public)
        }
    };
    let keypair = KeyPair {
        project_id: caller.project_id.clone(),
        name: name.to_owned(),
        public_key: checked.public_key,
        fingerprint: checked.fingerprint,
        algorithm: checked.algorithm,
        create_at: state.service.now_ms(),
    };
    match state.service.store().insert_keypair(&keypair).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(ApiError::KeyPairExists(name.to_owned())),
        Err(other) => return Err(other.into()),
    }
    tracing::info!(keypair = %name, fingerprint = %keypair.fingerprint, "key pair created");
    Ok(Json(render(&keypair, private_key)))
}

/// The project's key pairs by name. Atelier extension.
#[utoipa::path(get, path = "/v1/{project_id}/keypairs", tag = "keypair (Atelier extension)",
    params(("project_id" = String, Path)),
    responses((status = 200, body = KeypairList)))]
pub async fn list_keypairs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<KeypairList>, ApiError> {
    let keypairs: Vec<KeypairResponse> = state
        .service
        .store()
        .list_keypairs(&caller.project_id)
        .await?
        .iter()
        .map(|k| render(k, None))
        .collect();
    Ok(Json(KeypairList {
        total: keypairs.len() as i64,
        keypairs,
    }))
}

/// One key pair. Atelier extension.
#[utoipa::path(get, path = "/v1/{project_id}/keypairs/{name}", tag = "keypair (Atelier extension)",
    params(("project_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = KeypairResponse), (status = 404, body = ErrorBody)))]
pub async fn show_keypair(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, name)): Path<(String, String)>,
) -> Result<Json<KeypairResponse>, ApiError> {
    let keypair = state
        .service
        .store()
        .find_keypair(&caller.project_id, &name)
        .await?
        .ok_or(ApiError::ResourceNotFound("key pair"))?;
    Ok(Json(render(&keypair, None)))
}

/// Delete a key pair. Running notebooks stop accepting its key with the next connection.
/// Atelier extension.
#[utoipa::path(delete, path = "/v1/{project_id}/keypairs/{name}", tag = "keypair (Atelier extension)",
    params(("project_id" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_keypair(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state
        .service
        .store()
        .delete_keypair(&caller.project_id, &name)
        .await?
    {
        tracing::info!(keypair = %name, "key pair deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ResourceNotFound("key pair"))
    }
}
