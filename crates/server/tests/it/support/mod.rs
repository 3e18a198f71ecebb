//! The harness: the real [`App`] (SQLite in a temp dir, API and gateway on `127.0.0.1:0`,
//! the placeholder runtime) driven over HTTP by a client that signs like the Huawei Cloud
//! SDKs. Dropping a [`TestApp`] cancels the server; [`TestApp::shutdown`] also waits for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use atelier_domain::{AccessKeyId, Credential, Project, ProjectId, User, UserId};
use atelier_runtime::PlaceholderRuntime;
use atelier_server::clock::{Clock, ManualClock, SystemClock};
use atelier_server::config::{
    BootstrapConfig, Config, LocalRuntimeConfig, PlaceholderRuntimeConfig, RuntimeConfig,
};
use atelier_server::{App, AppParts};

pub mod garage;
use atelier_store::Store;

/// The project, access key and secret key the bootstrap creates (spec §5.3 test values).
pub const PROJECT_ID: &str = "0123456789abcdef0123456789abcdef";
pub const ACCESS_KEY: &str = "AKTESTEXAMPLE0000001";
pub const SECRET_KEY: &str = "SKtestExampleSecretKey0000000000000000001";
/// The built-in JupyterLab image.
pub const JUPYTERLAB_IMAGE_ID: &str = "e1a07296-22a8-4f05-8bc8-e936c8e54090";

/// How long a test waits for an asynchronous status change before failing.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Which client's signing habits to copy (spec §5.1 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkStyle {
    /// Python SDK: signs `content-type;host;x-project-id;x-sdk-date`.
    Python,
    /// Go SDK / Terraform: signs `accept;content-type;user-agent;x-language;x-sdk-date` and
    /// adds `Host` and `X-Project-Id` after signing.
    Go,
}

/// The current wall-clock time in epoch milliseconds (what `SystemClock` says).
pub fn wall_clock_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

pub struct TestAppBuilder {
    clock: Option<Arc<ManualClock>>,
    step_delay: Duration,
    runtime: Option<Arc<PlaceholderRuntime>>,
    data_dir: Option<PathBuf>,
    local: bool,
    flavors: Option<Vec<atelier_server::config::FlavorConfig>>,
    warm_pool: usize,
    efs_quota_gb: Option<u64>,
    storage_scratch_gb: Option<u64>,
    hook_timeout: Option<Duration>,
    registry: Option<atelier_server::config::RegistrySettings>,
    storage: Option<atelier_server::config::StorageSettings>,
}

impl TestAppBuilder {
    /// Time for the domain (leases, `create_at`) moves only when the test advances it.
    /// Signatures are still checked against the wall clock.
    pub fn clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Delay of each start step of the placeholder runtime (ignored with [`Self::runtime`]).
    pub fn step_delay(mut self, step_delay: Duration) -> Self {
        self.step_delay = step_delay;
        self
    }

    /// A runtime shared with another app (its sandboxes outlive a control-plane restart).
    pub fn runtime(mut self, runtime: Arc<PlaceholderRuntime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// A data dir the test owns (restart tests); otherwise the app gets a fresh temp dir.
    pub fn data_dir(mut self, path: &Path) -> Self {
        self.data_dir = Some(path.to_owned());
        self
    }

    /// The real local runtime (bubblewrap, cgroups, JupyterLab) instead of the placeholder.
    /// The JupyterLab image is provisioned once into the target dir and shared by tests.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Keeps `size` warm sandboxes per image and flavor (the local runtime; tests default to 0).
    pub fn warm_pool(mut self, size: usize) -> Self {
        self.warm_pool = size;
        self
    }

    /// Replaces the flavor catalogue.
    /// The size of EFS volumes' filesystems (the default is 50 GB).
    pub fn registry(mut self, registry: atelier_server::config::RegistrySettings) -> Self {
        self.registry = Some(registry);
        self
    }

    /// What notebooks may mount under `/data/`.
    pub fn storage(mut self, storage: atelier_server::config::StorageSettings) -> Self {
        self.storage = Some(storage);
        self
    }

    /// How long a custom hook may run (the local runtime; the default is 300 s).
    pub fn hook_timeout(mut self, limit: Duration) -> Self {
        self.hook_timeout = Some(limit);
        self
    }

    pub fn efs_quota_gb(mut self, gb: u64) -> Self {
        self.efs_quota_gb = Some(gb);
        self
    }

    pub fn storage_scratch_gb(mut self, gb: u64) -> Self {
        self.storage_scratch_gb = Some(gb);
        self
    }

    pub fn flavors(mut self, flavors: Vec<atelier_server::config::FlavorConfig>) -> Self {
        self.flavors = Some(flavors);
        self
    }

    pub async fn spawn(self) -> TestApp {
        let (owned_dir, data_dir) = match self.data_dir {
            Some(path) => (None, path),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let mut config = Config {
            data_dir: data_dir.clone(),
            api_listen: "127.0.0.1:0".parse().expect("address"),
            gateway_listen: "127.0.0.1:0".parse().expect("address"),
            bootstrap: BootstrapConfig {
                project_id: Some(PROJECT_ID.to_owned()),
                access_key: Some(ACCESS_KEY.to_owned()),
                secret_key: Some(SECRET_KEY.to_owned()),
            },
            ..Config::default()
        };
        // SSH endpoints on loopback, in a range of their own: tests run in parallel.
        config.ssh.listen_address = "127.0.0.1".parse().expect("address");
        let first = 20_000 + rand::random_range(0..500u16) * 20;
        config.ssh.ports = format!("{first}-{}", first + 19);
        config.flavors = self.flavors;
        if let Some(registry) = self.registry {
            config.registry = registry;
        }
        if let Some(storage) = self.storage {
            config.storage = storage;
        }
        config.runtime = if self.local {
            let mut local = LocalRuntimeConfig {
                image_dir: Some(image_dir()),
                ready_timeout: Duration::from_secs(60),
                warm_pool: self.warm_pool,
                ..LocalRuntimeConfig::default()
            };
            if let Some(gb) = self.efs_quota_gb {
                local.efs_quota_gb = gb;
            }
            if let Some(gb) = self.storage_scratch_gb {
                local.storage_scratch_gb = gb;
            }
            if let Some(limit) = self.hook_timeout {
                local.hook_timeout = limit;
            }
            RuntimeConfig::Local(local)
        } else {
            RuntimeConfig::Placeholder(PlaceholderRuntimeConfig {
                step_delay: self.step_delay,
            })
        };
        let runtime = self
            .runtime
            .unwrap_or_else(|| Arc::new(PlaceholderRuntime::new(self.step_delay)));
        let local = self.local;
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(manual) => manual.clone(),
            None => Arc::new(SystemClock),
        };
        let app = App::build(
            config,
            AppParts {
                store: None,
                runtime: (!local).then(|| runtime.clone() as Arc<dyn atelier_runtime::Runtime>),
                clock: clock.clone(),
            },
        )
        .await
        .expect("the app builds");
        let api_addr = app.api_addr();
        let gateway_addr = app.gateway_addr();
        let store = app.state().service.store().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        TestApp {
            base_url: format!("http://{api_addr}"),
            host: api_addr.to_string(),
            gateway_addr,
            client,
            store,
            runtime,
            clock,
            manual_clock: self.clock,
            data_dir,
            local,
            _owned_dir: owned_dir,
            shutdown,
            task: Some(task),
        }
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>` of the API.
    pub base_url: String,
    /// `127.0.0.1:<port>`: the `Host` header the client sends and signs.
    pub host: String,
    /// Where the gateway listens; notebooks are reached there as `{id}.localhost`.
    pub gateway_addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    /// The app's store, for setting up identities the API cannot create.
    pub store: Arc<dyn Store>,
    pub runtime: Arc<PlaceholderRuntime>,
    clock: Arc<dyn Clock>,
    manual_clock: Option<Arc<ManualClock>>,
    pub data_dir: PathBuf,
    /// Runs the local runtime: Drop removes its sandboxes.
    local: bool,
    _owned_dir: Option<TempDir>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.local {
            remove_sandboxes(&self.data_dir);
        }
    }
}

/// Sandboxes outlive their server by design; a test that fails half-way must not leave its
/// JupyterLab processes, loop mounts and cgroups behind for the next test.
fn remove_sandboxes(data_dir: &Path) {
    // A sandbox's bwrap binds its notebook's SSH dir (`DATA/ssh/{id}`) or, warm, its slot's
    // (`DATA/pool/{slot}/ssh`).
    let markers = [
        format!("{}/ssh/", data_dir.display()),
        format!("{}/pool/", data_dir.display()),
    ];
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with("bwrap")) {
            continue;
        }
        if let Some(id) = args
            .iter()
            .filter_map(|a| markers.iter().find_map(|m| a.strip_prefix(m.as_str())))
            .map(|rest| rest.trim_end_matches("/ssh"))
            .find(|r| !r.contains('/'))
        {
            ids.push(id.to_owned());
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &entry.file_name().to_string_lossy()])
                .status();
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    for id in ids {
        for mount in [
            data_dir.join("mounts").join(&id),
            data_dir.join("volumes").join(&id),
        ] {
            let _ = std::process::Command::new("umount").arg(&mount).output();
        }
        for controller in ["memory", "cpu", "pids"] {
            let cgroup = format!("/sys/fs/cgroup/{controller}/atelier/{id}");
            for pid in std::fs::read_to_string(format!("{cgroup}/cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .status();
            }
            let _ = std::fs::remove_dir(&cgroup);
        }
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/atelier/{id}"));
    }
    // Whatever is still mounted in the data dir, the deepest first: warm slots' self-binds,
    // image roots (a loop-mounted upper fs and its overlay), /data trees and their s3fs
    // mounts (s3fs daemons outlive their server by design; unmounted, they end). Left
    // mounted, they would outlive the test's tempdir, and its removal would walk into them.
    let inside = format!("{}/", data_dir.display());
    for _ in 0..3 {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(&inside))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        if points.is_empty() {
            break;
        }
        for point in points {
            let _ = std::process::Command::new("umount")
                .args(["-l", point])
                .output();
        }
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            clock: None,
            step_delay: Duration::ZERO,
            runtime: None,
            data_dir: None,
            local: false,
            flavors: None,
            warm_pool: 0,
            efs_quota_gb: None,
            storage_scratch_gb: None,
            hook_timeout: None,
            registry: None,
            storage: None,
        }
    }

    /// The real app with an instant placeholder runtime and the system clock.
    pub async fn spawn() -> TestApp {
        TestApp::builder().spawn().await
    }

    /// Stops the server and waits until it has drained its requests and background tasks.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the server stops within 20 s")
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    /// Stops the server as a restart would: its sandboxes keep running for the next server
    /// on the same data dir to adopt (the next `TestApp`'s drop removes them).
    pub async fn shutdown_leaving_sandboxes(mut self) {
        self.local = false;
        self.shutdown().await;
    }

    /// The app's domain time (epoch ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, by: Duration) {
        self.manual_clock
            .as_ref()
            .expect("the app was built with a ManualClock")
            .advance(by.as_millis() as i64);
    }

    // -----------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------

    /// Headers of a request signed with `access_key`/`secret_key` as `style` signs, dated `date`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_headers(
        &self,
        style: SdkStyle,
        method: &Method,
        path_and_query: &str,
        body: &[u8],
        access_key: &str,
        secret_key: &str,
        date: jiff::Timestamp,
    ) -> HeaderMap {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let project = path
            .strip_prefix("/v1/")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-sdk-date"),
            HeaderValue::from_str(&atelier_auth::format_sdk_date(date)).expect("header"),
        );
        let host = HeaderValue::from_str(&self.host).expect("header");
        let project_header = project
            .as_deref()
            .map(|p| HeaderValue::from_str(p).expect("header"));
        let signed_names: &[&str] = match style {
            SdkStyle::Python => {
                headers.insert(header::HOST, host.clone());
                if let Some(project) = &project_header {
                    headers.insert(HeaderName::from_static("x-project-id"), project.clone());
                }
                &["content-type", "host", "x-project-id", "x-sdk-date"][..]
            }
            SdkStyle::Go => {
                headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
                headers.insert(
                    header::USER_AGENT,
                    HeaderValue::from_static("terraform-provider-iac"),
                );
                headers.insert(
                    HeaderName::from_static("x-language"),
                    HeaderValue::from_static("en-us"),
                );
                &[
                    "accept",
                    "content-type",
                    "user-agent",
                    "x-language",
                    "x-sdk-date",
                ][..]
            }
        };
        // The Python SDK only signs X-Project-Id when it sends it.
        let signed_names: Vec<&str> = signed_names
            .iter()
            .copied()
            .filter(|name| *name != "x-project-id" || project_header.is_some())
            .collect();
        let authorization = atelier_auth::sign(
            &atelier_auth::SignableRequest {
                method: method.as_str(),
                path,
                query,
                headers: &headers,
                body,
            },
            access_key,
            secret_key.as_bytes(),
            &signed_names,
        )
        .expect("the request can be signed");
        if style == SdkStyle::Go {
            // Go keeps Host outside the header map and adds X-Project-Id after signing.
            headers.insert(header::HOST, host);
            if let Some(project) = project_header {
                headers.insert(HeaderName::from_static("x-project-id"), project);
            }
        }
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&authorization).expect("header"),
        );
        headers
    }

    /// Sends a request as given; checks the `X-Request-Id` every response must carry.
    pub async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Response {
        let response = self
            .client
            .request(method, format!("{}{}", self.base_url, path_and_query))
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("the request reaches the server");
        assert_request_id(&response);
        response
    }

    /// A request signed like the Python SDK with the bootstrap AK/SK.
    pub async fn signed(&self, method: &str, path_and_query: &str, body: Option<&str>) -> Response {
        self.signed_as(SdkStyle::Python, method, path_and_query, body)
            .await
    }

    /// A request signed like the Go SDK (Terraform) with the bootstrap AK/SK.
    pub async fn signed_go(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&str>,
    ) -> Response {
        self.signed_as(SdkStyle::Go, method, path_and_query, body)
            .await
    }

    pub async fn signed_as(
        &self,
        style: SdkStyle,
        method: &str,
        path_and_query: &str,
        body: Option<&str>,
    ) -> Response {
        self.signed_with(style, method, path_and_query, body, ACCESS_KEY, SECRET_KEY)
            .await
    }

    /// A request signed with other credentials.
    pub async fn signed_with(
        &self,
        style: SdkStyle,
        method: &str,
        path_and_query: &str,
        body: Option<&str>,
        access_key: &str,
        secret_key: &str,
    ) -> Response {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let body = body.unwrap_or("").as_bytes().to_vec();
        let headers = self.sign_headers(
            style,
            &method,
            path_and_query,
            &body,
            access_key,
            secret_key,
            jiff::Timestamp::now(),
        );
        self.send_raw(method, path_and_query, headers, body).await
    }

    /// A request authenticated with `X-Auth-Token`.
    pub async fn with_token(
        &self,
        token: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&str>,
    ) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-auth-token"),
            HeaderValue::from_str(token).expect("header"),
        );
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        self.send_raw(
            method,
            path_and_query,
            headers,
            body.unwrap_or("").as_bytes().to_vec(),
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Identities
    // -----------------------------------------------------------------------------------------

    pub async fn admin(&self) -> User {
        self.store
            .find_user_by_name("admin")
            .await
            .expect("store")
            .expect("the bootstrap created the admin")
    }

    /// A token for the admin in `project`, valid for `lifetime` from `issued_at_ms`.
    pub async fn token_issued_at(
        &self,
        project: &str,
        lifetime: Duration,
        issued_at_ms: i64,
    ) -> String {
        let admin = self.admin().await;
        atelier_server::identity::create_token(
            self.store.as_ref(),
            &admin.id,
            &project.parse::<ProjectId>().expect("project id"),
            lifetime,
            issued_at_ms,
        )
        .await
        .expect("token created")
    }

    /// A token for the admin in `project`, valid for a day from now.
    pub async fn token(&self, project: &str) -> String {
        self.token_issued_at(project, Duration::from_secs(24 * 3600), self.now_ms())
            .await
    }

    /// A project the admin is not a member of.
    pub async fn foreign_project(&self) -> String {
        let project = Project {
            id: ProjectId::new_random(),
            name: "someone-elses".to_owned(),
            create_at: self.now_ms(),
        };
        self.store.create_project(&project).await.expect("store");
        project.id.to_string()
    }

    /// Another user with their own project and AK/SK: `(project_id, access_key, secret_key)`.
    pub async fn second_tenant(&self) -> (String, String, String) {
        let now = self.now_ms();
        let user = User {
            id: UserId::new_random(),
            name: "bob".to_owned(),
            domain_id: UserId::new_random().to_string(),
            domain_name: "other".to_owned(),
            is_admin: false,
            create_at: now,
        };
        let project = Project {
            id: ProjectId::new_random(),
            name: "bobs".to_owned(),
            create_at: now,
        };
        let credential = Credential {
            access_key: AccessKeyId::new_random(),
            secret_key: "bobs-secret-key-0123456789".to_owned(),
            user_id: user.id.clone(),
            description: "test".to_owned(),
            create_at: now,
        };
        self.store.create_user(&user).await.expect("store");
        self.store.create_project(&project).await.expect("store");
        self.store
            .add_project_member(&project.id, &user.id)
            .await
            .expect("store");
        self.store
            .create_credential(&credential)
            .await
            .expect("store");
        (
            project.id.to_string(),
            credential.access_key.to_string(),
            credential.secret_key,
        )
    }

    // -----------------------------------------------------------------------------------------
    // Notebooks
    // -----------------------------------------------------------------------------------------

    pub fn notebooks_path(&self) -> String {
        format!("/v1/{PROJECT_ID}/notebooks")
    }

    pub fn notebook_path(&self, id: &str) -> String {
        format!("/v1/{PROJECT_ID}/notebooks/{id}")
    }

    /// Creates a notebook; the create must succeed.
    pub async fn create_notebook(&self, body: &Value) -> Value {
        let response = self
            .signed("POST", &self.notebooks_path(), Some(&body.to_string()))
            .await;
        let (status, json) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "create failed: {json}");
        assert!(
            json["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{json}"
        );
        json
    }

    /// Creates a notebook named `name` and waits until it is RUNNING.
    pub async fn create_running(&self, name: &str) -> Value {
        let created = self.create_notebook(&notebook_body(name)).await;
        self.wait_status(id_of(&created), "RUNNING", SETTLE).await
    }

    /// Creates a notebook and brings it to STOPPED.
    pub async fn create_stopped(&self, name: &str) -> Value {
        let running = self.create_running(name).await;
        let id = id_of(&running).to_owned();
        self.stop(&id).await;
        self.wait_status(&id, "STOPPED", SETTLE).await
    }

    /// Stops a notebook; the stop must be accepted.
    pub async fn stop(&self, id: &str) -> Value {
        let response = self
            .signed("POST", &format!("{}/stop", self.notebook_path(id)), None)
            .await;
        let (status, json) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "stop refused: {json}");
        json
    }

    /// Starts a notebook; the start must be accepted.
    pub async fn start(&self, id: &str) -> Value {
        let response = self
            .signed("POST", &format!("{}/start", self.notebook_path(id)), None)
            .await;
        let (status, json) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "start refused: {json}");
        json
    }

    /// `GET` of a notebook: the status code and body.
    pub async fn show(&self, id: &str) -> (StatusCode, Value) {
        json_of(self.signed("GET", &self.notebook_path(id), None).await).await
    }

    /// `GET` of a notebook that must exist.
    pub async fn show_ok(&self, id: &str) -> Value {
        let (status, json) = self.show(id).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }

    /// Polls the notebook until its status is `status`; fails after `timeout`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, json) = self.show(id).await;
            if code == StatusCode::OK && json["status"] == status {
                return json;
            }
            // A failure is final: say so now rather than at the deadline.
            let failed = ["CREATE_FAILED", "START_FAILED", "DELETE_FAILED", "ERROR"];
            let seen = json["status"].as_str().unwrap_or_default();
            assert!(
                !(failed.contains(&seen) && seen != status),
                "notebook {id} ended {seen} while waiting for {status}: {}",
                json["fail_reason"]
            );
            assert!(
                Instant::now() < deadline,
                "notebook {id} did not reach {status} within {timeout:?}; last seen: {code} {json}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls until the notebook has no transitional status (or is gone); returns the status,
    /// `None` when gone.
    pub async fn wait_settled(&self, id: &str) -> Option<String> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let (code, json) = self.show(id).await;
            if code == StatusCode::NOT_FOUND {
                return None;
            }
            let status = json["status"].as_str().unwrap_or_default().to_owned();
            let transitional = matches!(
                status.as_str(),
                "INIT" | "CREATING" | "STARTING" | "STOPPING" | "DELETING" | "SNAPSHOTTING"
            );
            if code == StatusCode::OK && !transitional {
                return Some(status);
            }
            assert!(
                Instant::now() < deadline,
                "notebook {id} did not settle; last seen: {code} {json}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls until `GET` answers 404 ModelArts.6309.
    pub async fn wait_gone(&self, id: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let (code, json) = self.show(id).await;
            if code == StatusCode::NOT_FOUND {
                assert_eq!(json["error_code"], "ModelArts.6309", "{json}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "notebook {id} was not removed; last seen: {code} {json}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Checks, for the whole of `window`, that the notebook keeps `status` (for asserting that
    /// something does *not* happen, e.g. no auto-stop before the deadline).
    pub async fn assert_status_holds(&self, id: &str, status: &str, window: Duration) {
        let until = Instant::now() + window;
        while Instant::now() < until {
            let json = self.show_ok(id).await;
            assert_eq!(json["status"], status, "status changed: {json}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /notebooks/all` with `query`; must succeed.
    pub async fn list(&self, query: &str) -> Value {
        let response = self
            .signed(
                "GET",
                &format!("{}/all?{query}", self.notebooks_path()),
                None,
            )
            .await;
        let (status, json) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }

    /// How many notebooks the project has.
    pub async fn notebook_count(&self) -> i64 {
        self.list("limit=1").await["total"].as_i64().expect("total")
    }
}

/// The minimal create body every client sends (spec §1.4.1).
/// The image store of the local runtime's tests: where `atelier image pull` put the
/// built-in image (`ATELIER_RUNTIME__IMAGE_DIR`, as for the runtime's own tests), else one
/// in the target dir, built at the first start and shared by the tests.
pub fn image_dir() -> PathBuf {
    std::env::var_os("ATELIER_RUNTIME__IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("atelier-images"))
}

pub fn notebook_body(name: &str) -> Value {
    json!({
        "name": name,
        "flavor": "modelarts.vm.cpu.2u",
        "image_id": JUPYTERLAB_IMAGE_ID,
        "volume": {"category": "EVS", "ownership": "MANAGED", "capacity": 5}
    })
}

pub fn id_of(notebook: &Value) -> &str {
    notebook["id"].as_str().expect("the notebook has an id")
}

/// Status and JSON body of a response (`Value::Null` for an empty body).
pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("the body can be read");
    if text.is_empty() {
        return (status, Value::Null);
    }
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{status}: the body is not JSON ({error}): {text}"));
    (status, json)
}

/// Asserts a ModelArts error response and returns its body.
pub async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let (actual, json) = json_of(response).await;
    assert_eq!(
        (actual.as_u16(), json["error_code"].as_str()),
        (status, Some(code)),
        "unexpected answer: {actual} {json}"
    );
    assert!(
        json["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
        "error_msg is missing: {json}"
    );
    json
}

/// Every response carries a 32-hex `X-Request-Id` (spec §1.1, §4.1).
pub fn assert_request_id(response: &Response) {
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{} {}: X-Request-Id is `{id}`",
        response.status(),
        response.url()
    );
}

/// A Python environment of the host with JupyterLab (what a `local://` image names): a venv
/// of Debian's Python, made once per target dir (under a lock: test binaries run at once).
pub fn local_prefix() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let prefix = dir.join("local-prefix");
    let lock = std::fs::File::create(dir.join("local-prefix.lock")).expect("lock file");
    lock.lock().expect("lock");
    if !prefix.join("bin/jupyter-lab").exists() {
        let _ = std::fs::remove_dir_all(&prefix);
        let run = |program: &std::path::Path, args: &[&str]| {
            let status = std::process::Command::new(program)
                .args(args)
                .status()
                .expect("run");
            assert!(status.success(), "{} {args:?}: {status}", program.display());
        };
        run(
            std::path::Path::new("/usr/bin/python3"),
            &["-m", "venv", &prefix.to_string_lossy()],
        );
        run(
            &prefix.join("bin/pip"),
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "jupyterlab==4.6.6",
            ],
        );
    }
    prefix
}
