//! The one factory that turns `[runtime]` into a [`Runtime`]: a new kind is a variant of
//! [`RuntimeConfig`] and an arm here, nothing else.
use std::path::Path;
use std::sync::Arc;

use atelier_runtime::local::network::{Egress, EgressPolicy};
use atelier_runtime::local::uids::UidRange;
use atelier_runtime::{LocalConfig, LocalRuntime, PlaceholderRuntime, Runtime};

use crate::config::{EgressConfig, LocalRuntimeConfig, RegistrySettings, RuntimeConfig};

/// Builds the configured runtime for a server whose data lives in `data_dir`.
pub fn build(
    config: &RuntimeConfig,
    registry: &RegistrySettings,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn Runtime>> {
    let runtime: Arc<dyn Runtime> = match config {
        RuntimeConfig::Local(local) => local_runtime(local, registry, data_dir)?,
        RuntimeConfig::Placeholder(placeholder) => Arc::new(PlaceholderRuntime::with_state_dir(
            placeholder.step_delay,
            data_dir.join("placeholder-sandboxes"),
        )?),
    };
    Ok(runtime)
}

/// The local runtime with these settings (also what `atelier image pull` provisions for).
pub fn local_runtime(
    config: &LocalRuntimeConfig,
    registry: &RegistrySettings,
    data_dir: &Path,
) -> anyhow::Result<Arc<LocalRuntime>> {
    Ok(LocalRuntime::new(local_config(config, registry, data_dir))?)
}

fn local_config(
    config: &LocalRuntimeConfig,
    registry: &RegistrySettings,
    data_dir: &Path,
) -> LocalConfig {
    LocalConfig {
        registry: registry.oci(),
        discard_root_at_stop: config.discard_root_at_stop,
        host_ca_certificates: config.host_ca_certificates,
        image_cache_bytes: config.image_cache_gb.saturating_mul(1 << 30),
        root_quota_gb: config.root_quota_gb,
        hook_timeout: config.hook_timeout,
        data_dir: data_dir.to_owned(),
        image_dir: config
            .image_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("images")),
        jupyter_packages: config.jupyter_packages.clone(),
        ready_timeout: config.ready_timeout,
        stop_grace: config.stop_grace,
        pids_max: config.pids_max,
        warm_pool: config.warm_pool,
        efs_quota_gb: config.efs_quota_gb,
        storage_scratch_gb: config.storage_scratch_gb,
        uids: UidRange {
            first: config.uid_first,
            count: config.uid_count,
            registry: config.uid_registry.clone(),
        },
        egress: match config.egress {
            EgressConfig::Slirp4netns => Egress::Slirp4netns,
            EgressConfig::None => Egress::None,
        },
        egress_policy: EgressPolicy {
            allow: config.egress_allow.clone(),
            deny: config.egress_deny.clone(),
        },
    }
}
