//! Notebooks on container images, with real parts: the built-in JupyterLab image made on this
//! host (Debian packages and PyPI, built once and kept in the shared image dir) is pushed to
//! Debian's `docker-registry` on loopback, and a [`LocalRuntime`] starts notebooks from it.
//! What is checked happens inside the sandbox, as the notebook's user, entered with nsenter.
//! Needs root, bubblewrap, mmdebstrap and the registries (on first use); skips with a message
//! unless `ATELIER_REQUIRE_LOCAL_RUNTIME=1`, which makes a missing piece a failure.
// Tests read their switches from the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use atelier_domain::{NotebookId, VolumeCategory};
use atelier_oci::testing::Registry;
use atelier_oci::{ImageStore as OciStore, RegistryConfig, Resolved};
use atelier_runtime::local::build::{Recipe, build_builtin};
use atelier_runtime::local::network::{Egress, EgressPolicy};
use atelier_runtime::local::uids::UidRange;
use atelier_runtime::{
    ImageRef, LocalConfig, LocalRuntime, Progress, Refused, Runtime, SandboxSpec, Step,
};

fn image_dir() -> PathBuf {
    std::env::var_os("ATELIER_RUNTIME__IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("atelier-images"))
}

fn available(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root");
    }
    for tool in [
        "/usr/bin/mmdebstrap",
        "/usr/bin/bwrap",
        "/usr/bin/nsenter",
        atelier_oci::testing::REGISTRY,
    ] {
        if !Path::new(tool).exists() {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").as_deref() != Ok("1"),
        "{test} needs {}",
        missing.join(", ")
    );
    eprintln!("skipping {test}: needs {}", missing.join(", "));
    false
}

/// The built-in image, built once per image dir (under a lock shared with other tests).
async fn builtin_image() -> (OciStore, Resolved) {
    let dir = image_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".oci-build.lock"))
        .unwrap();
    let lock = tokio::task::spawn_blocking(move || {
        lock.lock().unwrap();
        lock
    })
    .await
    .unwrap();
    let store = OciStore::open(&dir.join("oci"), RegistryConfig::default()).unwrap();
    let work = dir.join("oci-build");
    std::fs::create_dir_all(&work).unwrap();
    let recipe = Recipe::new(vec!["jupyterlab==4.6.6".to_owned()]);
    let image = build_builtin(&store, &recipe, &work).await.unwrap();
    drop(lock);
    (store, image)
}

fn config(data_dir: &Path) -> LocalConfig {
    LocalConfig {
        registry: Default::default(),
        discard_root_at_stop: false,
        host_ca_certificates: true,
        image_cache_bytes: 0,
        root_quota_gb: 20,
        hook_timeout: Duration::from_secs(300),
        data_dir: data_dir.to_owned(),
        image_dir: image_dir(),
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

fn spec(notebook_id: NotebookId, image: &str) -> SandboxSpec {
    SandboxSpec {
        notebook_id,
        image: ImageRef::parse(image),
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

/// Records what a start reports of step 2.
#[derive(Default)]
struct Details(Mutex<Vec<String>>);

#[async_trait]
impl Progress for Details {
    async fn step_started(&self, _step: Step) -> Result<(), Refused> {
        Ok(())
    }
    async fn step_done(&self, _step: Step) -> Result<(), Refused> {
        Ok(())
    }
    async fn step_detail(&self, step: Step, detail: &str) {
        assert_eq!(step, Step::PrepareCompute);
        self.0.lock().unwrap().push(detail.to_owned());
    }
}

/// The processes of the notebook's cgroup (v1: its pids controller's; v2: its own).
fn cgroup_pids(id: NotebookId) -> Vec<i32> {
    [
        format!("/sys/fs/cgroup/pids/atelier/{id}/cgroup.procs"),
        format!("/sys/fs/cgroup/atelier/{id}/cgroup.procs"),
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .unwrap_or_default()
    .lines()
    .filter_map(|line| line.trim().parse().ok())
    .collect()
}

/// [`in_sandbox`], in the notebook's cgroups too (as the processes JupyterLab starts are).
fn in_sandbox_cgroup(data_dir: &Path, id: NotebookId, script: &str) -> (i32, String) {
    let join = format!(
        "for procs in /sys/fs/cgroup/*/atelier/{id}/cgroup.procs \
         /sys/fs/cgroup/atelier/{id}/cgroup.procs; do \
         [ -e \"$procs\" ] && echo $$ > \"$procs\"; done; exec \"$@\""
    );
    let record = std::fs::read_to_string(data_dir.join(format!("run/{id}/pid"))).unwrap();
    let init = record.split_whitespace().nth(2).unwrap().to_owned();
    let output = std::process::Command::new("/bin/sh")
        .args(["-c", &join, "join", "/usr/bin/nsenter"])
        .args([
            "-t", &init, "--user", "--mount", "--pid", "--ipc", "--uts", "--net", "--setuid",
            "1000", "--setgid", "100", "--root", "--wd", "/bin/sh", "-c", script,
        ])
        .env_clear()
        .env("PATH", "/opt/jupyterlab/bin:/usr/local/bin:/usr/bin:/bin")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// Runs `script` with sh in the notebook's sandbox as ma-user (nsenter into its namespaces,
/// the way SSH sessions enter it); returns (exit status, stdout + stderr).
fn in_sandbox(data_dir: &Path, id: NotebookId, script: &str) -> (i32, String) {
    let record = std::fs::read_to_string(data_dir.join(format!("run/{id}/pid"))).unwrap();
    let init = record.split_whitespace().nth(2).unwrap().to_owned();
    let output = std::process::Command::new("/usr/bin/nsenter")
        .args([
            "-t", &init, "--user", "--mount", "--pid", "--ipc", "--uts", "--net", "--setuid",
            "1000", "--setgid", "100", "--root", "--wd", "/bin/sh", "-c", script,
        ])
        .env_clear()
        .env("PATH", "/opt/jupyterlab/bin:/usr/local/bin:/usr/bin:/bin")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_runs_a_registry_image_keeps_its_changes_and_is_saved_as_a_new_image() {
    if !available("a_notebook_runs_a_registry_image") {
        return;
    }
    let (store, builtin) = builtin_image().await;
    let registry = Registry::start().await;
    let reference = format!("{}/team/lab:1", registry.host);
    store.push(&builtin, &reference).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    // An image store of its own: the image is really pulled from the registry.
    let mut settings = config(&data_dir);
    settings.image_dir = dir.path().join("images");
    settings.root_quota_gb = 1;
    let runtime = LocalRuntime::new(settings).unwrap();
    let data_dir = std::fs::canonicalize(&data_dir).unwrap();
    let first = NotebookId::new_random();
    let details = Details::default();
    runtime
        .ensure(&spec(first, &reference), &details)
        .await
        .unwrap();
    // Step 2 showed the bytes of the pull (the image is ~150 MB compressed).
    let shown = details.0.lock().unwrap().clone();
    assert!(
        shown
            .iter()
            .any(|d| d.starts_with("Pulling the image: ") || d.starts_with("Unpacking the image (")),
        "{shown:?}"
    );

    // The image's own system, as ma-user: its files are the user's, root's stay root's.
    let (status, out) = in_sandbox(
        &data_dir,
        first,
        "set -e; id -u; id -g; . /etc/os-release; echo $VERSION_CODENAME; \
         stat -c %u:%g /opt/jupyterlab /home/ma-user; \
         if rm -f /usr/bin/python3 2>/dev/null; then echo removed-system-file; fi; \
         if touch /etc/atelier-probe 2>/dev/null; then echo wrote-etc; fi; \
         site=$(python -c 'import site; print(site.getsitepackages()[0])'); \
         mkdir $site/atelier_probe; echo 'VALUE = 42' > $site/atelier_probe/__init__.py; \
         echo dotfile > /home/ma-user/.probe; echo kept > /home/ma-user/work/in-volume; \
         python -c 'import atelier_probe; print(atelier_probe.VALUE)'",
    );
    assert_eq!(status, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1000", "100", "bookworm", "1000:100", "1000:100", "42"],
        "{out}"
    );

    // What a notebook writes outside its work dir is bounded (root_quota_gb), on a
    // filesystem of its own: the host's disk is not the limit.
    let (status, out) = in_sandbox(
        &data_dir,
        first,
        "fallocate -l 100M /opt/jupyterlab/fits && rm /opt/jupyterlab/fits && echo fits; \
         fallocate -l 2G /opt/jupyterlab/too-big 2>&1; rm -f /opt/jupyterlab/too-big",
    );
    assert_eq!(status, 0, "{out}");
    assert!(
        out.starts_with("fits\n") && out.contains("No space left on device"),
        "{out}"
    );

    // Changes outside the work dir survive a stop and a start.
    runtime.stop(first).await.unwrap();
    runtime
        .ensure(&spec(first, &reference), &Details::default())
        .await
        .unwrap();
    let (status, out) = in_sandbox(
        &data_dir,
        first,
        "cat /home/ma-user/.probe && python -c 'import atelier_probe; print(atelier_probe.VALUE)'",
    );
    assert_eq!((status, out.as_str()), (0, "dotfile\n42\n"));

    // Saved as an image in the registry while a process of the notebook keeps writing: the
    // sandbox is paused while its changes are read (the reader is root on the host), and
    // runs on afterwards. A second notebook from the image has the package, as ma-user's,
    // and not the first one's work volume.
    let (status, out) = in_sandbox_cgroup(
        &data_dir,
        first,
        "nohup sh -c 'while :; do echo x >> /home/ma-user/work/tick; sleep 0.005; done' \
         >/dev/null 2>&1 &",
    );
    assert_eq!(status, 0, "{out}");
    let tick = data_dir.join(format!("volumes/{first}/tick"));
    for _ in 0..500 {
        if tick.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let saved = format!("{}/team/lab-saved:v1", registry.host);
    let target = ImageRef::parse(&saved);
    let saving = runtime.images().commit(first, &target);
    let watching = async {
        let mut paused = false;
        for _ in 0..2000 {
            paused |= cgroup_pids(first).iter().any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(')').next().map(str::to_owned))
                    .is_some_and(|rest| rest.trim_start().starts_with('T'))
            });
            if paused {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        paused
    };
    let (image, paused) = tokio::join!(saving, watching);
    let image = image.unwrap();
    assert!(paused, "the sandbox was never paused during the save");
    let before = std::fs::metadata(&tick).unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::fs::metadata(&tick).unwrap().len() > before,
        "the notebook runs on after the save"
    );
    assert!(image.digest.as_deref().unwrap().starts_with("sha256:"));
    assert!(
        image.size.unwrap() > builtin.size,
        "{image:?} vs {}",
        builtin.size
    );
    let second = NotebookId::new_random();
    runtime
        .ensure(&spec(second, &saved), &Details::default())
        .await
        .unwrap();
    let (status, out) = in_sandbox(
        &data_dir,
        second,
        "site=$(python -c 'import site; print(site.getsitepackages()[0])'); \
         stat -c %u:%g $site/atelier_probe/__init__.py; cat /home/ma-user/.probe; \
         python -c 'import atelier_probe; print(atelier_probe.VALUE)'; \
         ls /home/ma-user/work",
    );
    assert_eq!((status, out.as_str()), (0, "1000:100\ndotfile\n42\n"));

    // Saved in this host's store (`atelier.local/...`), the same.
    let local = runtime
        .images()
        .commit(first, &ImageRef::parse("atelier.local/team/lab-local:v1"))
        .await
        .unwrap();
    assert!(local.digest.is_some());
    let third = NotebookId::new_random();
    runtime
        .ensure(
            &spec(third, "atelier.local/team/lab-local:v1"),
            &Details::default(),
        )
        .await
        .unwrap();
    let (status, out) = in_sandbox(
        &data_dir,
        third,
        "python -c 'import atelier_probe; print(atelier_probe.VALUE)'",
    );
    assert_eq!((status, out.as_str()), (0, "42\n"));

    // Deleting a notebook removes its changes.
    for id in [first, second, third] {
        runtime.delete(id).await.unwrap();
        assert!(!data_dir.join(format!("roots/{id}")).exists());
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_cannot_run_fail_their_step_with_the_reason() {
    if !available("images_that_cannot_run_fail_their_step_with_the_reason") {
        return;
    }
    let (store, builtin) = builtin_image().await;
    let registry = Registry::start().await;
    // Debian without JupyterLab: the bottom layer of the built-in image alone.
    let mut bare = builtin.clone();
    bare.layers.truncate(1);
    if let Some(diff_ids) = bare.config["rootfs"]["diff_ids"].as_array_mut() {
        diff_ids.truncate(1);
    }
    bare.config["config"]["Env"] = serde_json::json!(["PATH=/usr/local/bin:/usr/bin:/bin"]);
    let bare_ref = format!("{}/team/debian:12", registry.host);
    store.push(&bare, &bare_ref).await.unwrap();
    // A small image whose only layer the registry then serves corrupted.
    let corrupt_ref = atelier_oci::testing::push(
        &registry,
        "team/corrupt:1",
        "amd64",
        vec![atelier_oci::testing::layer(&[("etc/x", "x")])],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let mut settings = config(&data_dir);
    settings.image_dir = dir.path().join("images");
    let runtime = LocalRuntime::new(settings).unwrap();

    let id = NotebookId::new_random();
    let error = runtime
        .ensure(&spec(id, &bare_ref), &Details::default())
        .await
        .unwrap_err();
    assert_eq!(error.step, Step::Initialise, "{error:?}");
    assert!(
        error
            .error
            .to_string()
            .contains("the image has no jupyter-lab on its PATH"),
        "{error:?}"
    );
    runtime.stop(id).await.unwrap();

    let layer = OciStore::open(&dir.path().join("peek"), RegistryConfig::default())
        .unwrap()
        .resolve(&corrupt_ref, "amd64")
        .await
        .unwrap()
        .layers[0]
        .digest
        .clone();
    let blob = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let id = NotebookId::new_random();
    let error = runtime
        .ensure(&spec(id, &corrupt_ref), &Details::default())
        .await
        .unwrap_err();
    assert_eq!(error.step, Step::PrepareCompute, "{error:?}");
    let text = error.error.to_string();
    assert!(text.contains(&layer), "{text}");
    // Nothing of the bad layer was kept.
    let store = std::fs::canonicalize(dir.path().join("images/oci")).unwrap();
    let hex = layer.strip_prefix("sha256:").unwrap();
    assert!(!store.join("blobs/sha256").join(hex).exists());
    assert!(!store.join(format!("layers/sha256-{hex}")).exists());
    runtime.stop(id).await.unwrap();
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_cache_evicts_what_no_notebook_is_based_on() {
    if !available("the_image_cache_evicts_what_no_notebook_is_based_on") {
        return;
    }
    let registry = Registry::start().await;
    let mut references = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let reference = atelier_oci::testing::push(
            &registry,
            &format!("team/{name}:1"),
            "amd64",
            vec![atelier_oci::testing::layer(&[(
                "etc/which",
                &format!("{name}{}", "x".repeat(1000)),
            )])],
        )
        .await;
        references.push(reference);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let mut settings = config(&dir.path().join("data"));
    settings.image_dir = dir.path().join("images");
    // Smaller than any image: every pull evicts all it may.
    settings.image_cache_bytes = 1;
    let runtime = LocalRuntime::new(settings).unwrap();
    let record = |digest: &str| {
        dir.path().join(format!(
            "images/oci/images/sha256-{}.json",
            digest.strip_prefix("sha256:").unwrap()
        ))
    };
    let pull = |reference: &str| {
        let runtime = runtime.clone();
        let reference = reference.to_owned();
        async move {
            runtime
                .images()
                .pull(&ImageRef::parse(&reference), &|_| {})
                .await
                .unwrap()
                .digest
                .unwrap()
        }
    };
    let a = pull(&references[0]).await;
    assert!(record(&a).exists());
    // A notebook based on c (its start fails later: the image has no system) keeps c.
    let based = NotebookId::new_random();
    let error = runtime
        .ensure(&spec(based, &references[2]), &Details::default())
        .await
        .unwrap_err();
    assert_eq!(error.step, Step::Initialise, "{error:?}");
    runtime.stop(based).await.unwrap();
    let b = pull(&references[1]).await;
    let c = runtime
        .images()
        .resolve(&ImageRef::parse(&references[2]), "amd64")
        .await
        .unwrap()
        .digest
        .unwrap();
    assert!(!record(&a).exists(), "a was used least recently");
    assert!(record(&b).exists(), "what was just pulled stays");
    assert!(record(&c).exists(), "a notebook is based on c");
    let d = pull(&references[3]).await;
    assert!(!record(&b).exists() && record(&c).exists() && record(&d).exists());
    // Once the notebook is deleted, c goes with the next pull.
    runtime.delete(based).await.unwrap();
    pull(&references[0]).await;
    assert!(!record(&c).exists());
    runtime.shutdown().await;
}

/// Records what hooks the start waits for wrote.
#[derive(Default)]
struct HookOutput(Mutex<String>);

#[async_trait]
impl Progress for HookOutput {
    async fn step_started(&self, _step: Step) -> Result<(), Refused> {
        Ok(())
    }
    async fn step_done(&self, _step: Step) -> Result<(), Refused> {
        Ok(())
    }
    async fn hook(&self, report: &atelier_runtime::HookReport) {
        if let atelier_runtime::HookActivity::Output(text) = &report.what {
            let mut all = self.0.lock().unwrap();
            all.push_str(text);
            all.push('\n');
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_images_environment_reaches_its_hooks_and_no_host_process() {
    if !available("an_images_environment_reaches_its_hooks_and_no_host_process") {
        return;
    }
    let (store, builtin) = builtin_image().await;
    let registry = Registry::start().await;
    // A hostile image: every process that gets its `Env` has its dynamic loader say which
    // program it loads for (an `LD_PRELOAD` there would run the tenant's code in it).
    let mut image = builtin.clone();
    let env = image.config["config"]["Env"]
        .as_array_mut()
        .expect("the built-in image has an Env");
    env.push(serde_json::json!("LD_DEBUG=files"));
    env.push(serde_json::json!("ATELIER_MARK=it's from the image"));
    let reference = format!("{}/tenant/loud:1", registry.host);
    store.push(&image, &reference).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let runtime = LocalRuntime::new(config(&dir.path().join("data"))).unwrap();
    let id = NotebookId::new_random();
    let mut spec = spec(id, &reference);
    spec.hooks.pre_start = Some(atelier_domain::Hook {
        script: atelier_domain::HookScript::Inline("echo \"mark=$ATELIER_MARK\"".to_owned()),
        mode: atelier_domain::HookMode::Block,
    });
    // A pre_start hook enters the sandbox as soon as it is set up (with no network to
    // attach here, nothing else waits for that).
    let output = HookOutput::default();
    runtime.ensure(&spec, &output).await.unwrap();
    let output = output.0.lock().unwrap().clone();
    assert!(
        output.contains("mark=it's from the image"),
        "the hook has the image's environment: {output}"
    );
    assert!(
        output.contains("needed by /bin/sh"),
        "the loader reports for the hook's own processes: {output}"
    );
    assert!(
        !output.contains("needed by /usr/bin/nsenter"),
        "the host's nsenter (root) got the image's environment: {output}"
    );
    runtime.stop(id).await.unwrap();
    runtime.shutdown().await;
}
