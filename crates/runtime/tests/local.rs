//! The runtime conformance suite against a real [`LocalRuntime`]: bubblewrap sandboxes with
//! JupyterLab. Needs root, bubblewrap, cgroups and python3-venv; skips with a message unless
//! `ATELIER_REQUIRE_LOCAL_RUNTIME=1`, which makes a missing piece a failure.
// Tests read their switches from the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::path::{Path, PathBuf};
use std::time::Duration;

use atelier_domain::{NotebookId, VolumeCategory};
use atelier_runtime::local::network::{Egress, EgressPolicy};
use atelier_runtime::local::uids::UidRange;
use atelier_runtime::{ImageRef, LocalConfig, LocalRuntime, SandboxSpec, conformance};

fn missing_prerequisites() -> Vec<&'static str> {
    let mut missing = Vec::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        missing.push("root");
    }
    if !std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("bubblewrap");
    }
    if !(Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists())
    {
        missing.push("cgroups");
    }
    if !std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import venv, ensurepip"])
        .status()
        .is_ok_and(|s| s.success())
    {
        missing.push("python3-venv");
    }
    missing
}

fn config(data_dir: &Path) -> LocalConfig {
    let image_dir = std::env::var_os("ATELIER_RUNTIME__IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("atelier-images"));
    LocalConfig {
        registry: Default::default(),
        discard_root_at_stop: false,
        host_ca_certificates: true,
        image_cache_bytes: 0,
        root_quota_gb: 20,
        hook_timeout: Duration::from_secs(300),
        data_dir: data_dir.to_owned(),
        image_dir,
        jupyter_packages: vec!["jupyterlab==4.6.6".to_owned()],
        ready_timeout: Duration::from_secs(60),
        stop_grace: Duration::from_secs(2),
        pids_max: 1024,
        warm_pool: 0,
        efs_quota_gb: 0,
        storage_scratch_gb: 0,
        uids: UidRange {
            first: 2_000_000_000,
            count: 1_000_000,
            registry: PathBuf::from("/var/lib/atelier/uids"),
        },
        egress: Egress::None,
        egress_policy: EgressPolicy {
            allow: Vec::new(),
            deny: Vec::new(),
        },
    }
}

fn spec(notebook_id: NotebookId) -> SandboxSpec {
    SandboxSpec {
        notebook_id,
        image: ImageRef::Builtin("jupyterlab".to_owned()),
        vcpus: 1,
        memory_mib: 1024,
        volume_category: VolumeCategory::Efs,
        volume_capacity_gb: 50,
        token: format!("token-{notebook_id}"),
        base_path: "/".to_owned(),
        origin: "http://localhost".to_owned(),
        hooks: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_runtime_passes_the_conformance_suite() {
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        assert!(
            std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").as_deref() != Ok("1"),
            "the local runtime needs {}",
            missing.join(", ")
        );
        eprintln!("skipping: the local runtime needs {}", missing.join(", "));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let subject = conformance::Subject {
        open: Box::new(move || LocalRuntime::new(config(&data_dir)).expect("local runtime")),
        spec: Box::new(spec),
        crash: Box::new(|runtime: &LocalRuntime, id| runtime.crash_for_tests(id)),
    };
    conformance::run_all(&subject).await;
}
