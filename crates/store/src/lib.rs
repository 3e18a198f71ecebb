//! Durable state: users, projects, credentials, tokens, images and notebooks.
//!
//! [`Store`] is the only way the rest of Atelier touches the database; [`SqliteStore`] is the
//! embedded default. Nothing above this crate knows which database it runs on.
#![forbid(unsafe_code)]

mod record;
mod sqlite;

use async_trait::async_trait;

use atelier_domain::{
    AccessKeyId, AccessToken, Credential, Image, ImageId, KeyPair, Notebook, NotebookEvent,
    NotebookId, Project, ProjectId, User, UserId,
};

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (e.g. a user name, an access key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row changed since it was read (optimistic concurrency), or is gone.
    #[error("the record was changed concurrently")]
    StaleVersion,
    #[error("the record is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn find_user(&self, id: &UserId) -> StoreResult<Option<User>>;
    async fn find_user_by_name(&self, name: &str) -> StoreResult<Option<User>>;
    async fn count_users(&self) -> StoreResult<i64>;

    async fn create_project(&self, project: &Project) -> StoreResult<()>;
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    async fn find_project(&self, id: &ProjectId) -> StoreResult<Option<Project>>;
    async fn add_project_member(&self, project: &ProjectId, user: &UserId) -> StoreResult<()>;
    async fn project_members(&self) -> StoreResult<Vec<(ProjectId, UserId)>>;

    async fn create_credential(&self, credential: &Credential) -> StoreResult<()>;
    async fn find_credential(&self, access_key: &AccessKeyId) -> StoreResult<Option<Credential>>;
    async fn list_credentials(&self) -> StoreResult<Vec<Credential>>;
    async fn delete_credential(&self, access_key: &AccessKeyId) -> StoreResult<bool>;

    async fn create_access_token(&self, token: &AccessToken) -> StoreResult<()>;
    async fn find_access_token(&self, token_sha256: &str) -> StoreResult<Option<AccessToken>>;

    async fn insert_image(&self, image: &Image) -> StoreResult<()>;
    async fn update_image(&self, image: &Image) -> StoreResult<()>;
    async fn list_images(&self) -> StoreResult<Vec<Image>>;

    /// Writes a new notebook and its first events, atomically.
    async fn insert_notebook(
        &self,
        notebook: &Notebook,
        events: &[NotebookEvent],
    ) -> StoreResult<()>;
    /// Writes `notebook` and `events` atomically if the stored version equals
    /// `notebook.version`; returns the new version (`notebook.version + 1`).
    /// [`StoreError::StaleVersion`] otherwise, and nothing is written.
    async fn update_notebook(
        &self,
        notebook: &Notebook,
        events: &[NotebookEvent],
    ) -> StoreResult<i64>;
    /// Removes the notebook and its events.
    async fn delete_notebook(&self, id: &NotebookId) -> StoreResult<()>;
    /// The notebook's events numbered above `after_seq`, oldest first, at most `limit`.
    async fn list_events(
        &self,
        id: &NotebookId,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<NotebookEvent>>;
    async fn find_notebook(&self, id: &NotebookId) -> StoreResult<Option<Notebook>>;
    /// Every notebook (in no particular order), for the in-memory index the server builds at
    /// boot.
    async fn list_notebooks(&self) -> StoreResult<Vec<Notebook>>;
    async fn find_image(&self, id: &ImageId) -> StoreResult<Option<Image>>;

    /// [`StoreError::Conflict`] when the project already has a key pair of that name.
    async fn insert_keypair(&self, keypair: &KeyPair) -> StoreResult<()>;
    /// A project's key pairs by name.
    async fn list_keypairs(&self, project: &ProjectId) -> StoreResult<Vec<KeyPair>>;
    async fn find_keypair(&self, project: &ProjectId, name: &str) -> StoreResult<Option<KeyPair>>;
    async fn delete_keypair(&self, project: &ProjectId, name: &str) -> StoreResult<bool>;
}

#[cfg(test)]
mod conformance;
