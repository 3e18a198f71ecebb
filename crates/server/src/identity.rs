//! Who is calling: AK/SK signatures (spec §5.2), `X-Auth-Token` tokens (§5.4), project
//! membership, and the first-start bootstrap of an admin identity.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use atelier_control::clock::Clock;
use atelier_domain::identity::random_secret;
use atelier_domain::{AccessKeyId, AccessToken, Credential, Project, ProjectId, User, UserId};
use atelier_store::Store;

use crate::config::{AuthConfig, BootstrapConfig};
use crate::error::ApiError;

/// The authenticated caller, attached to the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<User>,
    pub project_id: ProjectId,
}

/// A caller of the IAM reads (`/v3/…`), which name no project: the user, and the project its
/// token is scoped to (`None` for an AK/SK signature, which may act in any of the user's
/// projects).
#[derive(Debug, Clone)]
pub struct IamCaller {
    pub user: Arc<User>,
    pub token_project: Option<ProjectId>,
}

/// A credential or token with the user it belongs to.
type Authenticated<T> = Option<(T, Arc<User>)>;
type Cache<T> = RwLock<HashMap<String, Cached<Authenticated<T>>>>;
type Membership = HashSet<(ProjectId, UserId)>;

struct Cached<T> {
    value: T,
    fetched: Instant,
}

/// Read-mostly caches in front of the store, each entry trusted for `ttl` so that a credential
/// deleted offline stops working within that time.
pub struct Identity {
    store: Arc<dyn Store>,
    config: AuthConfig,
    /// Domain time (token expiry), the clock the rest of the server reads.
    clock: Arc<dyn Clock>,
    credentials: Cache<Credential>,
    members: RwLock<Option<Cached<Membership>>>,
    tokens: Cache<AccessToken>,
}

impl Identity {
    pub fn new(store: Arc<dyn Store>, config: AuthConfig, clock: Arc<dyn Clock>) -> Identity {
        Identity {
            store,
            config,
            clock,
            credentials: RwLock::new(HashMap::new()),
            members: RwLock::new(None),
            tokens: RwLock::new(HashMap::new()),
        }
    }

    fn fresh(&self, fetched: Instant) -> bool {
        fetched.elapsed() < self.config.cache_ttl
    }

    async fn credential(
        &self,
        access_key: &str,
    ) -> Result<Option<(Credential, Arc<User>)>, ApiError> {
        if let Some(entry) = self.credentials.read().expect("poisoned").get(access_key)
            && self.fresh(entry.fetched)
        {
            return Ok(entry.value.clone());
        }
        let found = match access_key.parse::<AccessKeyId>() {
            Ok(ak) => match self.store.find_credential(&ak).await? {
                Some(credential) => self
                    .store
                    .find_user(&credential.user_id)
                    .await?
                    .map(|user| (credential, Arc::new(user))),
                None => None,
            },
            Err(_) => None,
        };
        let mut cache = self.credentials.write().expect("poisoned");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(
            access_key.to_owned(),
            Cached {
                value: found.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(found)
    }

    async fn token(&self, token: &str) -> Result<Option<(AccessToken, Arc<User>)>, ApiError> {
        let digest = atelier_auth::sha256_hex(token.as_bytes());
        if let Some(entry) = self.tokens.read().expect("poisoned").get(&digest)
            && self.fresh(entry.fetched)
        {
            return Ok(entry.value.clone());
        }
        let found = match self.store.find_access_token(&digest).await? {
            Some(token) => self
                .store
                .find_user(&token.user_id)
                .await?
                .map(|user| (token, Arc::new(user))),
            None => None,
        };
        let mut cache = self.tokens.write().expect("poisoned");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(
            digest,
            Cached {
                value: found.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(found)
    }

    async fn is_member(&self, project: &ProjectId, user: &UserId) -> Result<bool, ApiError> {
        {
            // Only a cached "member" is trusted for the TTL (so a removal takes effect within
            // it); a miss is re-checked against the store, so a membership added while the
            // server runs (`atelier credential create`) counts at once.
            let members = self.members.read().expect("poisoned");
            if let Some(entry) = members.as_ref()
                && self.fresh(entry.fetched)
                && entry.value.contains(&(project.clone(), user.clone()))
            {
                return Ok(true);
            }
        }
        let all: HashSet<_> = self.store.project_members().await?.into_iter().collect();
        let member = all.contains(&(project.clone(), user.clone()));
        *self.members.write().expect("poisoned") = Some(Cached {
            value: all,
            fetched: Instant::now(),
        });
        Ok(member)
    }

    /// The live token `token` and its user (`X-Auth-Token`, and the web console's sign-in).
    pub async fn token_session(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<(AccessToken, Arc<User>), ApiError> {
        let (token, user) = self
            .token(token)
            .await?
            .ok_or(ApiError::Unauthenticated("decrypt token fail"))?;
        if token.expires_at <= now_ms {
            return Err(ApiError::Unauthenticated("token expired"));
        }
        Ok((token, user))
    }

    /// Who signed the request or whose token it carries, whatever its path: the user, and
    /// the token's project for a token.
    pub async fn authenticate_user(
        &self,
        parts: &axum::http::request::Parts,
        body: &[u8],
        now_ms: i64,
    ) -> Result<IamCaller, ApiError> {
        let headers = &parts.headers;
        let authorization = header_str(headers, "authorization");
        let (user, token_project) = match authorization {
            Some(value) if value.starts_with("SDK-HMAC-") => {
                (self.verify_signature(parts, body, value).await?, None)
            }
            _ => match header_str(headers, "x-auth-token") {
                Some(token) => {
                    let (token, user) = self.token_session(token, now_ms).await?;
                    (user, Some(token.project_id))
                }
                None => return Err(ApiError::Unauthenticated("x-auth-token not found")),
            },
        };
        Ok(IamCaller {
            user,
            token_project,
        })
    }

    /// The projects `caller` may act in: its token's project, or every project its user is a
    /// member of (read from the store, not the cache: this is a rare call).
    pub async fn projects_of(&self, caller: &IamCaller) -> Result<Vec<Project>, ApiError> {
        let members = self.store.project_members().await?;
        let mut projects: Vec<Project> = self
            .store
            .list_projects()
            .await?
            .into_iter()
            .filter(|project| members.contains(&(project.id.clone(), caller.user.id.clone())))
            .filter(|project| {
                caller
                    .token_project
                    .as_ref()
                    .is_none_or(|scope| *scope == project.id)
            })
            .collect();
        projects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(projects)
    }

    /// Authenticates a request to `/v1/{project_id}/…` whose body has been read.
    pub async fn authenticate(
        &self,
        parts: &axum::http::request::Parts,
        body: &[u8],
        path_project: &str,
        now_ms: i64,
    ) -> Result<Caller, ApiError> {
        let headers = &parts.headers;
        let IamCaller {
            user,
            token_project,
        } = self.authenticate_user(parts, body, now_ms).await?;
        let project_id: ProjectId = path_project
            .parse()
            .map_err(|_| ApiError::ProjectMismatch)?;
        if let Some(token_project) = token_project
            && token_project != project_id
        {
            return Err(ApiError::ProjectMismatch);
        }
        if let Some(header_project) = header_str(headers, "x-project-id")
            && header_project != path_project
        {
            return Err(ApiError::ProjectMismatch);
        }
        if !self.is_member(&project_id, &user.id).await? {
            return Err(ApiError::ProjectMismatch);
        }
        Ok(Caller { user, project_id })
    }

    async fn verify_signature(
        &self,
        parts: &axum::http::request::Parts,
        body: &[u8],
        authorization: &str,
    ) -> Result<Arc<User>, ApiError> {
        let parsed = atelier_auth::parse_authorization(authorization)
            .map_err(|_| ApiError::Unauthenticated("verify aksk signature fail"))?;
        let (credential, user) = self
            .credential(&parsed.access_key)
            .await?
            .ok_or(ApiError::Unauthenticated("verify aksk signature fail"))?;
        let request = atelier_auth::SignableRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
        };
        let skew = jiff::SignedDuration::try_from(self.config.max_clock_skew)
            .unwrap_or(jiff::SignedDuration::from_secs(900));
        atelier_auth::verify(
            &request,
            &parsed,
            credential.secret_key.as_bytes(),
            jiff::Timestamp::now(),
            skew,
        )
        .map_err(|error| match error {
            atelier_auth::SignatureError::ClockSkew => {
                ApiError::Unauthenticated("signature expired")
            }
            _ => ApiError::Unauthenticated("verify aksk signature fail"),
        })?;
        Ok(user)
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Middleware for `/v1/{project_id}/…`: reads the body (the signature covers it), checks
/// the caller, and hands the request on with the body and a [`Caller`] extension.
pub async fn require_caller(
    State(identity): State<Arc<Identity>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let now_ms = identity.clock.now_ms();
    let path = parts.uri.path();
    let authenticated = if let Some(rest) = path.strip_prefix("/v1/") {
        let project = rest.split('/').next().unwrap_or_default().to_owned();
        identity
            .authenticate(&parts, &bytes, &project, now_ms)
            .await
            .map(|caller| {
                parts.extensions.insert(caller);
            })
    } else if path.starts_with("/v3/") {
        identity
            .authenticate_user(&parts, &bytes, now_ms)
            .await
            .map(|caller| {
                parts.extensions.insert(caller);
            })
    } else {
        Err(ApiError::RouteNotFound)
    };
    match authenticated {
        Ok(()) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            tracing::info!(code = error.error_code(), reason = %error, "request refused");
            error.into_response()
        }
    }
}

/// What first start created, as written to `admin-credentials.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AdminCredentials {
    pub endpoint: String,
    pub project_id: String,
    pub access_key: String,
    pub secret_key: String,
}

pub const ADMIN_CREDENTIALS_FILE: &str = "admin-credentials.json";

/// On first start (no user yet) creates the admin user, a project and an AK/SK pair.
/// Returns them when created, `None` when the data dir was already initialised.
pub async fn bootstrap(
    store: &dyn Store,
    data_dir: &Path,
    endpoint: &str,
    fixed: &BootstrapConfig,
    now_ms: i64,
) -> anyhow::Result<Option<AdminCredentials>> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let admin = User {
        id: UserId::new_random(),
        name: "admin".to_owned(),
        domain_id: UserId::new_random().to_string(),
        domain_name: "atelier".to_owned(),
        is_admin: true,
        create_at: now_ms,
    };
    let project = Project {
        id: match &fixed.project_id {
            Some(id) => id
                .parse()
                .map_err(|_| anyhow::anyhow!("bad bootstrap project id"))?,
            None => ProjectId::new_random(),
        },
        name: "default".to_owned(),
        create_at: now_ms,
    };
    let credential = Credential {
        access_key: match &fixed.access_key {
            Some(ak) => ak
                .parse()
                .map_err(|_| anyhow::anyhow!("bad bootstrap access key"))?,
            None => AccessKeyId::new_random(),
        },
        secret_key: fixed
            .secret_key
            .clone()
            .unwrap_or_else(|| random_secret(40)),
        user_id: admin.id.clone(),
        description: "created at first start".to_owned(),
        create_at: now_ms,
    };
    store.create_user(&admin).await?;
    store.create_project(&project).await?;
    store.add_project_member(&project.id, &admin.id).await?;
    store.create_credential(&credential).await?;
    let admin_credentials = AdminCredentials {
        endpoint: endpoint.to_owned(),
        project_id: project.id.to_string(),
        access_key: credential.access_key.to_string(),
        secret_key: credential.secret_key.clone(),
    };
    write_private_json(&data_dir.join(ADMIN_CREDENTIALS_FILE), &admin_credentials)?;
    Ok(Some(admin_credentials))
}

/// Writes `value` as JSON to a file only its owner can read (0600).
pub fn write_private_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(serde_json::to_string_pretty(value)?.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

/// Makes a new `X-Auth-Token` for `user` in `project`; returns the token text (shown once).
pub async fn create_token(
    store: &dyn Store,
    user: &UserId,
    project: &ProjectId,
    lifetime: Duration,
    now_ms: i64,
) -> anyhow::Result<String> {
    let token = format!("atk-{}", random_secret(48));
    store
        .create_access_token(&AccessToken {
            token_sha256: atelier_auth::sha256_hex(token.as_bytes()),
            user_id: user.clone(),
            project_id: project.clone(),
            expires_at: now_ms + lifetime.as_millis() as i64,
            create_at: now_ms,
        })
        .await?;
    Ok(token)
}
