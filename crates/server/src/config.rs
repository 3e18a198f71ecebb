//! The one configuration tree. Layers, later winning: defaults ← TOML file (`--config`) ←
//! `ATELIER_*` environment ← command-line flags. Only this module reads the environment.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use atelier_domain::{Feature, Flavor, FlavorCategory};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the database, credentials and volumes live.
    pub data_dir: PathBuf,
    /// The ModelArts API listener.
    pub api_listen: SocketAddr,
    /// The notebook gateway listener (JupyterLab traffic).
    pub gateway_listen: SocketAddr,
    /// The base URL users reach the gateway at, `scheme://host[:port]`, e.g.
    /// `https://nb.example.com` (https when a TLS-terminating proxy is in front). Each notebook
    /// is served at `{id}.HOST`, so HOST needs a wildcard DNS record. Default:
    /// `http://localhost:PORT` with the bound gateway port (`*.localhost` is loopback in
    /// browsers).
    #[serde(default)]
    pub gateway_public_url: Option<String>,
    /// `host` (default): every notebook is its own web origin, `{id}.HOST`. `path`: all
    /// notebooks under `/{id}/` of one origin — **unsafe with several tenants**, since a page
    /// one notebook serves can then read and drive every other notebook in the same browser.
    #[serde(default)]
    pub gateway_routing: GatewayRouting,
    /// Opt-in: microseconds the gateway keeps polling its sockets after HTTP traffic instead of
    /// sleeping, to skip wake-up latency (the gateway then runs on a thread of its own); yields
    /// to other threads and stops when the machine is oversubscribed. 0 (the default) turns it
    /// off; at most 100000.
    #[serde(default = "default_busy_poll_us")]
    pub gateway_busy_poll_us: u64,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Replaces the built-in flavor catalogue when given.
    #[serde(default)]
    pub flavors: Option<Vec<FlavorConfig>>,
    #[serde(default)]
    pub ssh: SshConfig,
    /// First-start identity; random when absent.
    #[serde(default)]
    pub bootstrap: BootstrapConfig,
    /// Container registries: how the `swr_path` of registered images is reached.
    #[serde(default)]
    pub registry: RegistrySettings,
    /// Dynamic storage: what notebooks of which projects may mount under `/data/`.
    #[serde(default)]
    pub storage: StorageSettings,
}

/// `[storage]`: the object stores and shares notebooks may mount (`POST …/storage`). A
/// notebook names only a bucket and prefix (`obs://bucket/dir/`) or a share's id; where
/// that is and the credentials are the operator's, here, and never reach the notebook.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `[[storage.object_stores]]`: S3-compatible stores (Garage, MinIO, Ceph RGW, OBS…).
    #[serde(default)]
    pub object_stores: Vec<ObjectStoreSettings>,
    /// `[[storage.shares]]`: host directories (an NFS export mounted on the host, say),
    /// mounted with `category: EFS` and `efs_id`.
    #[serde(default)]
    pub shares: Vec<ShareSettings>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSettings {
    /// `http(s)://host[:port]`; buckets are addressed path-style.
    pub endpoint: String,
    /// The signing region (`garage` for Garage; default `us-east-1`).
    #[serde(default)]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Project ids allowed to mount from this store; `["*"]` (the default) is every project.
    #[serde(default = "every_project")]
    pub projects: Vec<String>,
    /// Buckets they may mount; `["*"]` is every bucket the key reaches.
    pub buckets: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSettings {
    /// The `efs_id` a mount request names.
    pub id: String,
    /// An absolute directory of this host.
    pub path: PathBuf,
    #[serde(default = "every_project")]
    pub projects: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
}

fn every_project() -> Vec<String> {
    vec!["*".to_owned()]
}

/// Never printed: the secret keys.
impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores: Vec<_> = self
            .object_stores
            .iter()
            .map(|s| (&s.endpoint, &s.access_key_id, &s.projects, &s.buckets))
            .collect();
        f.debug_struct("StorageSettings")
            .field("object_stores", &stores)
            .field("shares", &self.shares)
            .finish()
    }
}

impl StorageSettings {
    fn check(&self) -> Result<(), ConfigError> {
        for store in &self.object_stores {
            let scheme_ok =
                store.endpoint.starts_with("http://") || store.endpoint.starts_with("https://");
            if !scheme_ok
                || store
                    .endpoint
                    .chars()
                    .any(|c| c.is_whitespace() || c == ',')
            {
                return Err(ConfigError::Invalid(format!(
                    "storage.object_stores endpoint {:?} must be http(s)://host[:port]",
                    store.endpoint
                )));
            }
            if store.buckets.is_empty() || store.access_key_id.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "storage.object_stores {}: buckets and access_key_id are required",
                    store.endpoint
                )));
            }
            if store
                .region
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Err(ConfigError::Invalid(format!(
                    "storage.object_stores {}: region {:?} is not a region name",
                    store.endpoint, store.region
                )));
            }
        }
        for share in &self.shares {
            if !share.path.is_absolute() || share.id.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "storage.shares {:?}: id is required and path must be absolute",
                    share.id
                )));
            }
            // Checked again at every mount: the directory may not be there yet (an export
            // mounted later) or change owner.
            if let Ok(meta) = std::fs::metadata(&share.path)
                && let Some(refusal) =
                    atelier_runtime::local::root_owned_share(&meta, share.read_only)
            {
                return Err(ConfigError::Invalid(format!(
                    "storage.shares {:?}: {} is {refusal}",
                    share.id,
                    share.path.display()
                )));
            }
        }
        Ok(())
    }

    /// What the control plane grants.
    pub fn grants(&self) -> atelier_control::storage::StorageGrants {
        use atelier_control::storage::{ObjectStoreGrant, ShareGrant, StorageGrants};
        StorageGrants {
            object_stores: self
                .object_stores
                .iter()
                .map(|s| ObjectStoreGrant {
                    endpoint: s.endpoint.trim_end_matches('/').to_owned(),
                    region: s.region.clone(),
                    access_key_id: s.access_key_id.clone(),
                    secret_access_key: s.secret_access_key.clone(),
                    projects: s.projects.clone(),
                    buckets: s.buckets.clone(),
                    read_only: s.read_only,
                })
                .collect(),
            shares: self
                .shares
                .iter()
                .map(|s| ShareGrant {
                    id: s.id.clone(),
                    path: s.path.clone(),
                    projects: s.projects.clone(),
                    read_only: s.read_only,
                })
                .collect(),
        }
    }
}

/// `[registry]`: container registries images are registered from (issue 15).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Registries (`host[:port]`, as in `swr_path`) spoken to over plain HTTP; loopback ones
    /// always are, every other one is HTTPS with the system's roots.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Credentials per registry (`host[:port]`): `{ username, password }` or `{ token }`.
    #[serde(default)]
    pub credentials: std::collections::BTreeMap<String, RegistryCredentials>,
    /// The largest image RegisterImage accepts (compressed layers and configuration), in
    /// MiB; larger ones are refused with ModelArts.6771. 0: no limit. Default 51200 (50 GiB).
    #[serde(default = "default_max_image_mb")]
    pub max_image_mb: u64,
    /// The registry (`host[:port]`) that notebooks saved as images (create-image) are pushed
    /// to: a saved image's `swr_path` is `{push}/{namespace}/{name}:{tag}`. The default,
    /// `atelier.local`, is this server's own image store (nothing leaves the host).
    #[serde(default = "default_push_registry")]
    pub push: String,
}

fn default_max_image_mb() -> u64 {
    50 * 1024
}

fn default_push_registry() -> String {
    "atelier.local".to_owned()
}

impl RegistrySettings {
    /// `push` is a registry host with an optional port: no scheme, path, user or spaces.
    fn check_push(&self) -> Result<(), ConfigError> {
        let push = self.push.as_str();
        let (host, port) = match push.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (push, None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0));
        if host_ok && port_ok {
            Ok(())
        } else {
            Err(ConfigError::Invalid(format!(
                "registry.push {push:?} must be a registry host[:port], e.g. atelier.local or registry.lan:5000"
            )))
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            insecure: Vec::new(),
            credentials: Default::default(),
            max_image_mb: default_max_image_mb(),
            push: default_push_registry(),
        }
    }
}

/// Never printed: the passwords and tokens are secrets.
impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("insecure", &self.insecure)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("max_image_mb", &self.max_image_mb)
            .field("push", &self.push)
            .finish()
    }
}

/// Credentials for one registry.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum RegistryCredentials {
    Basic { username: String, password: String },
    Token { token: String },
}

impl RegistrySettings {
    /// What the image store needs of it (no size limit there: RegisterImage checks sizes).
    pub fn oci(&self) -> atelier_oci::RegistryConfig {
        atelier_oci::RegistryConfig {
            insecure: self.insecure.clone(),
            credentials: self
                .credentials
                .iter()
                .map(|(registry, credentials)| {
                    let credentials = match credentials {
                        RegistryCredentials::Basic { username, password } => {
                            atelier_oci::Credentials::Basic {
                                username: username.clone(),
                                password: password.clone(),
                            }
                        }
                        RegistryCredentials::Token { token } => {
                            atelier_oci::Credentials::Bearer(token.clone())
                        }
                    };
                    (registry.clone(), credentials)
                })
                .collect(),
            max_image_bytes: 0,
        }
    }
}

/// How notebooks are told apart on the gateway (see [`Config::gateway_routing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayRouting {
    #[default]
    Host,
    Path,
}

impl From<GatewayRouting> for atelier_gateway::Routing {
    fn from(routing: GatewayRouting) -> Self {
        match routing {
            GatewayRouting::Host => atelier_gateway::Routing::Host,
            GatewayRouting::Path => atelier_gateway::Routing::Path,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// The address notebooks' SSH ports listen on.
    pub listen_address: std::net::IpAddr,
    /// The host users connect to (`ssh://ma-user@HOST:PORT`). Default: the gateway public
    /// URL's host, else the listen address (127.0.0.1 when it is unspecified).
    #[serde(default)]
    pub public_host: Option<String>,
    /// Ports handed to SSH-enabled notebooks, one each: `FIRST-LAST`.
    pub ports: String,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            listen_address: "0.0.0.0".parse().expect("valid address"),
            public_host: None,
            ports: "2200-2999".to_owned(),
        }
    }
}

impl SshConfig {
    /// The port range as `(first, last)`.
    pub fn port_range(&self) -> Result<(u16, u16), ConfigError> {
        let bad = || {
            ConfigError::Invalid(format!(
                "ssh.ports `{}` must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535",
                self.ports
            ))
        };
        let (first, last) = self.ports.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok((first, last))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Allowed difference between `X-Sdk-Date` and the server clock.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// How long credential and membership look-ups are cached.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Lifetime of tokens made by `atelier token create`.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// The region id this server stands for. SDKs configured with a region and no project id
    /// look their project up as `GET /v3/projects?name={region}`: the project named `default`
    /// is called `{region}` there, every other project `{region}_{name}` (Huawei Cloud's names
    /// for a region's main project and its sub-projects). 1-64 of `[a-z0-9-]`.
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_region() -> String {
    "local".to_owned()
}

impl AuthConfig {
    fn check_region(&self) -> Result<(), ConfigError> {
        let region = self.region.as_str();
        let ok = !region.is_empty()
            && region.len() <= 64
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(ConfigError::Invalid(format!(
                "auth.region {region:?} must be 1-64 characters of [a-z0-9-], e.g. eu-de"
            )))
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_clock_skew: Duration::from_secs(15 * 60),
            cache_ttl: Duration::from_secs(5),
            token_lifetime: Duration::from_secs(24 * 3600),
            region: default_region(),
        }
    }
}

/// Where notebooks run: `[runtime]` with `kind = "local"` (the default) or `kind =
/// "placeholder"`, and only that kind's own settings (another kind's setting is an error, not
/// silently ignored). [`crate::runtimes::build`] is the one place that turns it into a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// One value per server, read once at boot: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum RuntimeConfig {
    /// Bubblewrap sandboxes with JupyterLab on this host.
    Local(LocalRuntimeConfig),
    /// Starts nothing: walks the four start steps (API tests, benchmarks of the control plane).
    Placeholder(PlaceholderRuntimeConfig),
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig::Local(LocalRuntimeConfig::default())
    }
}

impl RuntimeConfig {
    /// The configured kind's name, as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            RuntimeConfig::Local(_) => "local",
            RuntimeConfig::Placeholder(_) => "placeholder",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaceholderRuntimeConfig {
    /// Artificial duration of each start step.
    #[serde(with = "humantime_serde")]
    pub step_delay: Duration,
}

impl Default for PlaceholderRuntimeConfig {
    fn default() -> Self {
        PlaceholderRuntimeConfig {
            step_delay: Duration::from_millis(50),
        }
    }
}

/// How the local runtime's notebooks reach the outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressConfig {
    /// NAT through slirp4netns, filtered by `egress_allow` / `egress_deny`.
    #[default]
    Slirp4netns,
    /// Loopback only.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalRuntimeConfig {
    /// The image store (pulled, built and saved images; default: DATA_DIR/images).
    pub image_dir: Option<PathBuf>,
    /// What `pip install` puts into the built-in JupyterLab image.
    pub jupyter_packages: Vec<String>,
    /// How long JupyterLab may take to answer after its sandbox starts.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a notebook stops.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// How long a custom hook (`hooks` of a notebook) may run before it is killed; a
    /// `pre_start` or `BLOCK` `post_start` hook killed so fails the start.
    #[serde(with = "humantime_serde")]
    pub hook_timeout: Duration,
    /// Most processes one notebook may run.
    pub pids_max: u64,
    /// Warm sandboxes kept ready per image and flavor once a notebook of that kind has
    /// started (JupyterLab imported, waiting for its notebook); 0 turns the pool off.
    pub warm_pool: usize,
    /// Whether a notebook running a container image loses its changes outside the work dir
    /// (packages installed with pip or apt, dotfiles in /home/ma-user) at each stop, as in
    /// ModelArts. By default they are kept until the notebook is deleted, and saved by
    /// create-image.
    pub discard_root_at_stop: bool,
    /// Whether container images trust the host's certificate authorities: the host's
    /// `/etc/ssl/certs/ca-certificates.crt` replaces the image's bundle (and `SSL_CERT_FILE`
    /// and `REQUESTS_CA_BUNDLE` name it), for networks whose way out passes a TLS-inspecting
    /// proxy. Default on.
    pub host_ca_certificates: bool,
    /// The most the image store (pulled, built and saved images, under the image dir) may
    /// take, in GiB; past it, the least recently used images no notebook of this server is
    /// based on are evicted after a pull. 0: no limit. Default 100.
    pub image_cache_gb: u64,
    /// The most a notebook may write outside its work dir (pip installs into the image's
    /// environment, files under /opt, ...), in GiB: its root's changes live in a sparse ext4
    /// image of this size, so that no notebook can fill the host's disk through its root.
    /// 0: no limit. Default 20.
    pub root_quota_gb: u64,
    /// The size of an EFS work volume's filesystem, which no notebook can exceed (0: a plain
    /// directory without a limit). The spec shows EFS as a fixed 50 GB.
    pub efs_quota_gb: u64,
    /// The scratch space of a notebook's object-store mounts, in GiB: s3fs keeps what is
    /// written there until a close uploads it, in a sparse ext4 image of this size, so that
    /// no notebook can fill the host's disk through `/data`. A file written to a bucket must
    /// fit in it until it is closed. 0: the data dir's filesystem (down to its last 2 GiB).
    pub storage_scratch_gb: u64,
    /// The first host uid of the range notebooks run as (one uid per notebook and per warm
    /// sandbox; never an account of the host).
    pub uid_first: u32,
    pub uid_count: u32,
    /// Where uid claims live, shared by every Atelier on the host.
    pub uid_registry: PathBuf,
    /// How notebooks reach the outside: `slirp4netns` (NAT, filtered) or `none` (loopback
    /// only).
    pub egress: EgressConfig,
    /// When not empty, the only networks notebooks may reach (besides their DNS forwarder).
    pub egress_allow: Vec<ipnet::IpNet>,
    /// Networks notebooks may never reach, on top of the host's own addresses, link-local
    /// and multicast, which are always refused.
    pub egress_deny: Vec<ipnet::IpNet>,
}

impl Default for LocalRuntimeConfig {
    fn default() -> Self {
        LocalRuntimeConfig {
            image_dir: None,
            jupyter_packages: vec!["jupyterlab==4.6.6".to_owned()],
            ready_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(2),
            hook_timeout: Duration::from_secs(300),
            pids_max: 1024,
            warm_pool: 1,
            discard_root_at_stop: false,
            host_ca_certificates: true,
            image_cache_gb: 100,
            root_quota_gb: 20,
            efs_quota_gb: 50,
            storage_scratch_gb: 10,
            uid_first: 2_000_000_000,
            uid_count: 1_000_000,
            uid_registry: PathBuf::from("/var/lib/atelier/uids"),
            egress: EgressConfig::default(),
            egress_allow: Vec::new(),
            egress_deny: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    pub project_id: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlavorConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub vcpus: u32,
    pub memory_gib: u64,
    #[serde(default = "default_feature")]
    pub feature: String,
    #[serde(default = "default_category")]
    pub category: String,
    #[serde(default)]
    pub sold_out: bool,
}

fn default_feature() -> String {
    "NOTEBOOK".to_owned()
}
fn default_busy_poll_us() -> u64 {
    0
}
fn default_category() -> String {
    "CPU".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("atelier-data"),
            api_listen: "127.0.0.1:8080".parse().expect("valid address"),
            gateway_listen: "127.0.0.1:8081".parse().expect("valid address"),
            gateway_public_url: None,
            gateway_routing: GatewayRouting::default(),
            gateway_busy_poll_us: default_busy_poll_us(),
            auth: AuthConfig::default(),
            runtime: RuntimeConfig::default(),
            flavors: None,
            ssh: SshConfig::default(),
            bootstrap: BootstrapConfig::default(),
            registry: RegistrySettings::default(),
            storage: StorageSettings::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
}

/// Top-level keys that `ATELIER_<KEY>` (and `ATELIER_<SECTION>__<KEY>`) may set. Other
/// `ATELIER_*` variables (e.g. of test scripts) are not configuration and are ignored.
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "api_listen",
    "gateway_listen",
    "gateway_public_url",
    "gateway_routing",
    "gateway_busy_poll_us",
    "auth",
    "runtime",
    "ssh",
    "registry",
];

impl Config {
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        Self::load_layers(file, overrides, true)
    }

    fn load_layers(
        file: Option<&Path>,
        overrides: &ConfigOverrides,
        environment: bool,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default_layer()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_owned()));
            }
            figment = figment.merge(Toml::file(file));
        }
        if environment {
            figment = figment
                .merge(Env::prefixed("ATELIER_").split("__").filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    ENV_KEYS.iter().any(|k| key.starts_with(k))
                }))
                .merge(
                    Env::prefixed("ATELIER_BOOTSTRAP_")
                        .only(&["project_id", "access_key", "secret_key"])
                        .map(|key| format!("bootstrap.{key}").into()),
                );
        }
        figment = figment.merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The lowest layer: every default, but of the runtime only its kind — the kind's own
    /// defaults come from its section's `Default`, so that choosing another kind in a higher
    /// layer does not inherit settings it does not have.
    fn default_layer() -> figment::value::Value {
        let mut layer = figment::value::Value::serialize(Config::default())
            .expect("the default configuration serializes");
        if let figment::value::Value::Dict(_, dict) = &mut layer {
            let mut runtime = figment::value::Dict::new();
            runtime.insert("kind".to_owned(), Config::default().runtime.kind().into());
            dict.insert("runtime".to_owned(), runtime.into());
        }
        layer
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let RuntimeConfig::Local(local) = &self.runtime
            && (local.uid_count == 0
                || u64::from(local.uid_first) + u64::from(local.uid_count)
                    > u64::from(u32::MAX - 1)
                || local.uid_first < 65_536)
        {
            return Err(ConfigError::Invalid(format!(
                "runtime.uid_first {} and runtime.uid_count {} must describe uids between 65536 and 4294967294",
                local.uid_first, local.uid_count
            )));
        }
        if let Some(project_id) = &self.bootstrap.project_id
            && project_id.parse::<atelier_domain::ProjectId>().is_err()
        {
            return Err(ConfigError::Invalid(
                "ATELIER_BOOTSTRAP_PROJECT_ID must be 32 lowercase hex characters".to_owned(),
            ));
        }
        if let Some(access_key) = &self.bootstrap.access_key
            && access_key.parse::<atelier_domain::AccessKeyId>().is_err()
        {
            return Err(ConfigError::Invalid(
                "ATELIER_BOOTSTRAP_ACCESS_KEY must be 8-128 characters of [A-Za-z0-9_-]".to_owned(),
            ));
        }
        if let Some(secret_key) = &self.bootstrap.secret_key
            && secret_key.len() < 16
        {
            return Err(ConfigError::Invalid(
                "ATELIER_BOOTSTRAP_SECRET_KEY must have at least 16 characters".to_owned(),
            ));
        }
        if self.gateway_busy_poll_us > 100_000 {
            return Err(ConfigError::Invalid(format!(
                "gateway_busy_poll_us {} is above 100000 (0.1 s)",
                self.gateway_busy_poll_us
            )));
        }
        self.gateway_addressing(self.gateway_listen.port())?;
        self.flavor_catalogue()?;
        self.ssh.port_range()?;
        self.registry.check_push()?;
        self.storage.check()?;
        self.auth.check_region()?;
        Ok(())
    }

    /// Where browsers reach notebooks, for a gateway bound to `bound_port`.
    pub fn gateway_addressing(
        &self,
        bound_port: u16,
    ) -> Result<atelier_gateway::Addressing, ConfigError> {
        let routing = self.gateway_routing.into();
        match &self.gateway_public_url {
            Some(url) => atelier_gateway::Addressing::new(url.trim_end_matches('/'), routing)
                .map_err(ConfigError::Invalid),
            None if routing == atelier_gateway::Routing::Path => {
                // The shared origin, as before per-notebook origins.
                let host = match self.gateway_listen.ip() {
                    ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                atelier_gateway::Addressing::new(&format!("http://{host}:{bound_port}"), routing)
                    .map_err(ConfigError::Invalid)
            }
            None => Ok(atelier_gateway::Addressing::local(bound_port, routing)),
        }
    }

    pub fn flavor_catalogue(&self) -> Result<Vec<Flavor>, ConfigError> {
        let Some(flavors) = &self.flavors else {
            return Ok(Flavor::builtin());
        };
        flavors
            .iter()
            .map(|f| {
                let feature: Feature = f.feature.parse().map_err(|_| {
                    ConfigError::Invalid(format!("flavor {}: bad feature {}", f.id, f.feature))
                })?;
                let category: FlavorCategory = f.category.parse().map_err(|_| {
                    ConfigError::Invalid(format!("flavor {}: bad category {}", f.id, f.category))
                })?;
                let mut flavor = Flavor::cpu(&f.id, f.vcpus, f.memory_gib, feature);
                flavor.category = category;
                flavor.sold_out = f.sold_out;
                if let Some(name) = &f.name {
                    flavor.name = name.clone();
                }
                Ok(flavor)
            })
            .collect()
    }

    /// The effective configuration as TOML, secrets redacted (`atelier config check`).
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.bootstrap.secret_key.is_some() {
            shown.bootstrap.secret_key = Some("<redacted>".to_owned());
        }
        for credentials in shown.registry.credentials.values_mut() {
            match credentials {
                RegistryCredentials::Basic { password, .. } => *password = "<redacted>".into(),
                RegistryCredentials::Token { token } => *token = "<redacted>".into(),
            }
        }
        for store in &mut shown.storage.object_stores {
            store.secret_access_key = "<redacted>".to_owned();
        }
        toml_string(&shown)
    }
}

fn toml_string(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|error| format!("# unprintable: {error}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_share_owned_by_root_is_refused_at_boot() {
        let dir = tempfile::tempdir().unwrap();
        // Making it another user's needs root.
        if std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).is_err() {
            eprintln!("skipping: needs root");
            return;
        }
        let share = |read_only: bool| {
            format!(
                "[[storage.shares]]\nid = \"team\"\npath = \"{}\"\nread_only = {read_only}\n",
                dir.path().display()
            )
        };
        let error = load(&share(false)).unwrap_err().to_string();
        assert!(
            error.contains("storage.shares \"team\"") && error.contains("chown"),
            "{error}"
        );
        assert!(load(&share(true)).is_ok(), "read-only, it may stay root's");
        std::os::unix::fs::chown(dir.path(), Some(4242), Some(4242)).unwrap();
        assert!(load(&share(false)).is_ok());
    }

    #[test]
    fn registry_credentials_are_read_and_never_printed() {
        let config = load(
            r#"
[registry]
insecure = ["registry.lan:5000"]
max_image_mb = 10
[registry.credentials]
"swr.example.com" = { username = "robot", password = "hunter2-pw" }
"ghcr.example.com" = { token = "tok-xyzzy" }
"#,
        )
        .unwrap();
        assert_eq!(config.registry.max_image_mb, 10);
        let oci = config.registry.oci();
        assert_eq!(oci.insecure, ["registry.lan:5000"]);
        assert_eq!(
            oci.credentials["swr.example.com"],
            atelier_oci::Credentials::Basic {
                username: "robot".into(),
                password: "hunter2-pw".into()
            }
        );
        assert_eq!(
            oci.credentials["ghcr.example.com"],
            atelier_oci::Credentials::Bearer("tok-xyzzy".into())
        );
        for shown in [config.to_redacted_toml(), format!("{config:?}")] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("xyzzy"),
                "{shown}"
            );
        }
        assert!(config.to_redacted_toml().contains("robot"));
        assert_eq!(config.registry.push, "atelier.local", "the default");
        assert!(
            config
                .to_redacted_toml()
                .contains("push = \"atelier.local\""),
            "config check shows it"
        );
        assert!(
            load("[registry.credentials]\n\"r\" = { user = \"x\" }\n").is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn the_push_registry_is_a_host_and_port() {
        let config = load("[registry]\npush = \"registry.lan:5000\"\n").unwrap();
        assert_eq!(config.registry.push, "registry.lan:5000");
        for bad in [
            "https://registry.lan",
            "registry.lan/team",
            "",
            "registry.lan:0",
            "registry.lan:http",
            "reg istry",
        ] {
            assert!(
                load(&format!("[registry]\npush = {bad:?}\n")).is_err(),
                "{bad}"
            );
        }
    }

    /// The file's configuration, whatever `ATELIER_*` the test runs under (the test script
    /// exports `ATELIER_RUNTIME__IMAGE_DIR`, for one).
    fn load(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("atelier.toml");
        std::fs::write(&file, toml).unwrap();
        Config::load_layers(Some(&file), &ConfigOverrides::default(), false)
    }

    fn id() -> atelier_domain::NotebookId {
        "4f2c9a52-1b6e-4c3d-9e8f-0a1b2c3d4e5f".parse().unwrap()
    }

    #[test]
    fn the_region_defaults_to_local_and_is_an_id() {
        assert_eq!(load("").unwrap().auth.region, "local");
        let config = load("[auth]\nregion = \"eu-de\"\n").unwrap();
        assert_eq!(config.auth.region, "eu-de");
        // `_` separates a sub-project's name from the region: never part of a region.
        for bad in ["", "EU-DE", "eu_de", "eu de", &"a".repeat(65)] {
            assert!(
                load(&format!("[auth]\nregion = \"{bad}\"\n")).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn notebooks_are_their_own_origin_by_default() {
        let config = load("").unwrap();
        assert_eq!(config.gateway_routing, GatewayRouting::Host);
        let addressing = config.gateway_addressing(8081).unwrap();
        assert_eq!(
            addressing.lab_url(&id()),
            format!("http://{}.localhost:8081/lab", id())
        );
        let public = load("gateway_public_url = \"https://nb.example.com/\"\n").unwrap();
        assert_eq!(
            public.gateway_addressing(8081).unwrap().lab_url(&id()),
            format!("https://{}.nb.example.com/lab", id())
        );
    }

    #[test]
    fn the_shared_origin_must_be_asked_for() {
        let config = load("gateway_routing = \"path\"\n").unwrap();
        assert_eq!(
            config.gateway_addressing(8081).unwrap().lab_url(&id()),
            format!("http://127.0.0.1:8081/{}/lab", id())
        );
        assert!(load("gateway_routing = \"shared\"\n").is_err());
    }

    #[test]
    fn a_public_url_that_cannot_carry_notebook_hosts_is_refused() {
        for bad in [
            "http://10.0.0.5:8081",
            "https://nb.example.com/notebooks",
            "nb.example.com",
        ] {
            let error = load(&format!("gateway_public_url = \"{bad}\"\n")).unwrap_err();
            assert!(error.to_string().contains("gateway_public_url"), "{error}");
        }
        // An address is fine for the shared origin.
        assert!(
            load("gateway_public_url = \"http://10.0.0.5:8081\"\ngateway_routing = \"path\"\n")
                .is_ok()
        );
    }

    #[test]
    fn the_runtime_is_local_by_default_with_the_local_defaults() {
        let config = load("").unwrap();
        assert_eq!(
            config.runtime,
            RuntimeConfig::Local(LocalRuntimeConfig::default())
        );
        let config = load("[runtime]\nwarm_pool = 3\negress = \"none\"\n").unwrap();
        let RuntimeConfig::Local(local) = &config.runtime else {
            panic!("{:?}", config.runtime)
        };
        assert_eq!((local.warm_pool, local.egress), (3, EgressConfig::None));
        assert_eq!(local.pids_max, LocalRuntimeConfig::default().pids_max);
    }

    #[test]
    fn each_runtime_kind_takes_only_its_own_settings() {
        let config = load("[runtime]\nkind = \"placeholder\"\nstep_delay = \"10ms\"\n").unwrap();
        assert_eq!(
            config.runtime,
            RuntimeConfig::Placeholder(PlaceholderRuntimeConfig {
                step_delay: Duration::from_millis(10)
            })
        );
        // Another kind's setting is an error naming it, not silently ignored.
        let error =
            load("[runtime]\nkind = \"placeholder\"\nimage_dir = \"/srv/images\"\n").unwrap_err();
        assert!(error.to_string().contains("image_dir"), "{error}");
        let error = load("[runtime]\nstep_delay = \"10ms\"\n").unwrap_err();
        assert!(error.to_string().contains("step_delay"), "{error}");
        let error = load("[runtime]\nkind = \"kubernetes\"\n").unwrap_err();
        assert!(error.to_string().contains("kubernetes"), "{error}");
        let error = load("[runtime]\negress = \"tor\"\n").unwrap_err();
        assert!(error.to_string().contains("tor"), "{error}");
        let error = load("[runtime]\nuid_first = 1000\n").unwrap_err();
        assert!(error.to_string().contains("uid_first"), "{error}");
    }

    #[test]
    fn the_effective_runtime_section_names_its_kind() {
        let shown = load("[runtime]\nkind = \"placeholder\"\n")
            .unwrap()
            .to_redacted_toml();
        assert!(
            shown.contains("[runtime]\nkind = \"placeholder\""),
            "{shown}"
        );
        assert!(!shown.contains("image_dir"), "{shown}");
        // What `config check` prints loads again as the same configuration.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shown.toml");
        std::fs::write(&file, load("").unwrap().to_redacted_toml()).unwrap();
        let again = Config::load_layers(Some(&file), &ConfigOverrides::default(), false).unwrap();
        assert_eq!(again.runtime, RuntimeConfig::default());
    }
}
