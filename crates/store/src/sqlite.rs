//! The embedded default: SQLite in WAL mode.
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use atelier_domain::{
    AccessKeyId, AccessToken, Credential, EventLevel, Image, ImageId, KeyPair, Notebook,
    NotebookEvent, NotebookId, Project, ProjectId, User, UserId,
};

use crate::record::{ImageRecord, NotebookRecord};
use crate::{Store, StoreError, StoreResult};

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs the embedded migrations.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Reads are served from the server's index: 1 MiB of page cache per connection
            // (not SQLite's 2 MiB default) is plenty for writes.
            .pragma("cache_size", "-1024");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(classify)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(SqliteStore { pool })
    }

    /// A private in-memory database (tests).
    pub async fn open_in_memory() -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(classify)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(classify)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(SqliteStore { pool })
    }
}

fn classify(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        return StoreError::Conflict(db.message().to_owned());
    }
    StoreError::Database(Box::new(error))
}

fn parse<T: FromStr>(text: String, what: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(what.to_owned()))
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: parse(row.get("id"), "user id")?,
        name: row.get("name"),
        domain_id: row.get("domain_id"),
        domain_name: row.get("domain_name"),
        is_admin: row.get::<i64, _>("is_admin") != 0,
        create_at: row.get("create_at"),
    })
}

fn project_from_row(row: &SqliteRow) -> StoreResult<Project> {
    Ok(Project {
        id: parse(row.get("id"), "project id")?,
        name: row.get("name"),
        create_at: row.get("create_at"),
    })
}

fn credential_from_row(row: &SqliteRow) -> StoreResult<Credential> {
    Ok(Credential {
        access_key: parse(row.get("access_key"), "access key")?,
        secret_key: row.get("secret_key"),
        user_id: parse(row.get("user_id"), "user id")?,
        description: row.get("description"),
        create_at: row.get("create_at"),
    })
}

fn notebook_from_row(row: &SqliteRow) -> StoreResult<Notebook> {
    let body: String = row.get("body");
    let record: NotebookRecord =
        serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    record.into_domain(row.get("version"))
}

async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[NotebookEvent],
) -> StoreResult<()> {
    for event in events {
        sqlx::query(
            "INSERT INTO notebook_events
               (notebook_id, seq, at, level, reason, message, status, step, step_status)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(event.notebook_id.to_string())
        .bind(event.seq)
        .bind(event.at)
        .bind(event.level.as_str())
        .bind(&event.reason)
        .bind(&event.message)
        .bind(event.status.as_str())
        .bind(event.step.map(i64::from))
        .bind(event.step_status.map(|s| s.as_str()))
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

fn event_from_row(row: &SqliteRow) -> StoreResult<NotebookEvent> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("event {what}"));
    let id: String = row.get("notebook_id");
    let level: String = row.get("level");
    let status: String = row.get("status");
    let step: Option<i64> = row.get("step");
    let step_status: Option<String> = row.get("step_status");
    Ok(NotebookEvent {
        notebook_id: id.parse().map_err(|_| corrupt("notebook id"))?,
        seq: row.get("seq"),
        at: row.get("at"),
        level: if level == "Warning" {
            EventLevel::Warning
        } else {
            EventLevel::Normal
        },
        reason: row.get("reason"),
        message: row.get("message"),
        status: status.parse().map_err(|_| corrupt("status"))?,
        step: step.map(|s| s as u8),
        step_status: step_status
            .map(|s| s.parse().map_err(|_| corrupt("step status")))
            .transpose()?,
    })
}

fn keypair_from_row(row: &SqliteRow) -> StoreResult<KeyPair> {
    let project: String = row.get("project_id");
    Ok(KeyPair {
        project_id: project
            .parse()
            .map_err(|_| StoreError::Corrupt("keypair project id".to_owned()))?,
        name: row.get("name"),
        public_key: row.get("public_key"),
        fingerprint: row.get("fingerprint"),
        algorithm: row.get("algorithm"),
        create_at: row.get("create_at"),
    })
}

fn image_from_row(row: &SqliteRow) -> StoreResult<Image> {
    let body: String = row.get("body");
    let record: ImageRecord =
        serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    record.into_domain()
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, name, domain_id, domain_name, is_admin, create_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(user.id.as_str())
        .bind(&user.name)
        .bind(&user.domain_id)
        .bind(&user.domain_name)
        .bind(user.is_admin as i64)
        .bind(user.create_at)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn find_user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn find_user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn count_users(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(row.get("n"))
    }

    async fn create_project(&self, project: &Project) -> StoreResult<()> {
        sqlx::query("INSERT INTO projects (id, name, create_at) VALUES (?, ?, ?)")
            .bind(project.id.as_str())
            .bind(&project.name)
            .bind(project.create_at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY create_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(project_from_row).collect()
    }

    async fn find_project(&self, id: &ProjectId) -> StoreResult<Option<Project>> {
        let row = sqlx::query("SELECT * FROM projects WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn add_project_member(&self, project: &ProjectId, user: &UserId) -> StoreResult<()> {
        sqlx::query("INSERT OR IGNORE INTO project_members (project_id, user_id) VALUES (?, ?)")
            .bind(project.as_str())
            .bind(user.as_str())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn project_members(&self) -> StoreResult<Vec<(ProjectId, UserId)>> {
        let rows = sqlx::query("SELECT project_id, user_id FROM project_members")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|row| {
                Ok((
                    parse(row.get("project_id"), "project id")?,
                    parse(row.get("user_id"), "user id")?,
                ))
            })
            .collect()
    }

    async fn create_credential(&self, credential: &Credential) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO credentials (access_key, secret_key, user_id, description, create_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(credential.access_key.as_str())
        .bind(&credential.secret_key)
        .bind(credential.user_id.as_str())
        .bind(&credential.description)
        .bind(credential.create_at)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn find_credential(&self, access_key: &AccessKeyId) -> StoreResult<Option<Credential>> {
        let row = sqlx::query("SELECT * FROM credentials WHERE access_key = ?")
            .bind(access_key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(credential_from_row).transpose()
    }

    async fn list_credentials(&self) -> StoreResult<Vec<Credential>> {
        let rows = sqlx::query("SELECT * FROM credentials ORDER BY create_at, access_key")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(credential_from_row).collect()
    }

    async fn delete_credential(&self, access_key: &AccessKeyId) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM credentials WHERE access_key = ?")
            .bind(access_key.as_str())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected() > 0)
    }

    async fn create_access_token(&self, token: &AccessToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO access_tokens (token_sha256, user_id, project_id, expires_at, create_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&token.token_sha256)
        .bind(token.user_id.as_str())
        .bind(token.project_id.as_str())
        .bind(token.expires_at)
        .bind(token.create_at)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn find_access_token(&self, token_sha256: &str) -> StoreResult<Option<AccessToken>> {
        let row = sqlx::query("SELECT * FROM access_tokens WHERE token_sha256 = ?")
            .bind(token_sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(|row| {
            Ok(AccessToken {
                token_sha256: row.get("token_sha256"),
                user_id: parse(row.get("user_id"), "user id")?,
                project_id: parse(row.get("project_id"), "project id")?,
                expires_at: row.get("expires_at"),
                create_at: row.get("create_at"),
            })
        })
        .transpose()
    }

    async fn insert_image(&self, image: &Image) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO images (id, project_id, status, create_at, body) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(image.id.to_string())
        .bind(image.project_id.as_deref())
        .bind(&image.status)
        .bind(image.create_at)
        .bind(to_json(&ImageRecord::from_domain(image))?)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn update_image(&self, image: &Image) -> StoreResult<()> {
        let result = sqlx::query("UPDATE images SET status = ?, body = ? WHERE id = ?")
            .bind(&image.status)
            .bind(to_json(&ImageRecord::from_domain(image))?)
            .bind(image.id.to_string())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        if result.rows_affected() == 0 {
            return Err(StoreError::StaleVersion);
        }
        Ok(())
    }

    async fn list_images(&self) -> StoreResult<Vec<Image>> {
        let rows = sqlx::query("SELECT body FROM images ORDER BY create_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(image_from_row).collect()
    }

    async fn find_image(&self, id: &ImageId) -> StoreResult<Option<Image>> {
        let row = sqlx::query("SELECT body FROM images WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(image_from_row).transpose()
    }

    async fn insert_keypair(&self, keypair: &KeyPair) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO keypairs (project_id, name, public_key, fingerprint, algorithm, create_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(keypair.project_id.to_string())
        .bind(&keypair.name)
        .bind(&keypair.public_key)
        .bind(&keypair.fingerprint)
        .bind(&keypair.algorithm)
        .bind(keypair.create_at)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn list_keypairs(&self, project: &ProjectId) -> StoreResult<Vec<KeyPair>> {
        let rows = sqlx::query("SELECT * FROM keypairs WHERE project_id = ? ORDER BY name")
            .bind(project.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(keypair_from_row).collect()
    }

    async fn find_keypair(&self, project: &ProjectId, name: &str) -> StoreResult<Option<KeyPair>> {
        let row = sqlx::query("SELECT * FROM keypairs WHERE project_id = ? AND name = ?")
            .bind(project.to_string())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(keypair_from_row).transpose()
    }

    async fn delete_keypair(&self, project: &ProjectId, name: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM keypairs WHERE project_id = ? AND name = ?")
            .bind(project.to_string())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected() > 0)
    }

    async fn insert_notebook(
        &self,
        notebook: &Notebook,
        events: &[NotebookEvent],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query(
            "INSERT INTO notebooks (id, project_id, user_id, status, create_at, version, body)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(notebook.id.to_string())
        .bind(notebook.project_id.as_str())
        .bind(notebook.user_id.as_str())
        .bind(notebook.status.as_str())
        .bind(notebook.create_at)
        .bind(notebook.version)
        .bind(to_json(&NotebookRecord::from_domain(notebook))?)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn update_notebook(
        &self,
        notebook: &Notebook,
        events: &[NotebookEvent],
    ) -> StoreResult<i64> {
        let next_version = notebook.version + 1;
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let result = sqlx::query(
            "UPDATE notebooks SET status = ?, version = ?, body = ? WHERE id = ? AND version = ?",
        )
        .bind(notebook.status.as_str())
        .bind(next_version)
        .bind(to_json(&NotebookRecord::from_domain(notebook))?)
        .bind(notebook.id.to_string())
        .bind(notebook.version)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if result.rows_affected() == 0 {
            return Err(StoreError::StaleVersion);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(classify)?;
        Ok(next_version)
    }

    async fn delete_notebook(&self, id: &NotebookId) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for statement in [
            "DELETE FROM notebook_events WHERE notebook_id = ?",
            "DELETE FROM notebooks WHERE id = ?",
        ] {
            sqlx::query(statement)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn list_events(
        &self,
        id: &NotebookId,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<NotebookEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM notebook_events WHERE notebook_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id.to_string())
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn find_notebook(&self, id: &NotebookId) -> StoreResult<Option<Notebook>> {
        let row = sqlx::query("SELECT version, body FROM notebooks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(notebook_from_row).transpose()
    }

    async fn list_notebooks(&self) -> StoreResult<Vec<Notebook>> {
        // In batches along the rowid (the table's own b-tree, so each batch is a seek): the
        // JSON of 10,000 rows at once would be a peak the allocator keeps.
        const BATCH: i64 = 500;
        let mut notebooks = Vec::new();
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT rowid, version, body FROM notebooks WHERE rowid > ? ORDER BY rowid LIMIT ?",
            )
            .bind(after)
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
            let Some(last) = rows.last() else { break };
            after = last.get("rowid");
            for row in &rows {
                notebooks.push(notebook_from_row(row)?);
            }
            if (rows.len() as i64) < BATCH {
                break;
            }
        }
        Ok(notebooks)
    }
}
