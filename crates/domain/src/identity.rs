//! Users, projects and their credentials.
use crate::{AccessKeyId, EpochMillis, ProjectId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub domain_id: String,
    pub domain_name: String,
    pub is_admin: bool,
    pub create_at: EpochMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub create_at: EpochMillis,
}

/// An AK/SK pair. The secret must be kept in clear: HMAC verification needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: AccessKeyId,
    pub secret_key: String,
    pub user_id: UserId,
    pub description: String,
    pub create_at: EpochMillis,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// An `X-Auth-Token`, stored only as its SHA-256; scoped to one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token_sha256: String,
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub expires_at: EpochMillis,
    pub create_at: EpochMillis,
}

/// Random secret text: `len` characters from `[A-Za-z0-9]`.
pub fn random_secret(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
