//! The image store against a real registry: Debian's `docker-registry` (the CNCF distribution
//! registry) on loopback, with images the test builds and pushes itself (nothing is pulled
//! from the internet). Needs root (layers keep their owners) and `/usr/bin/docker-registry`.
// Tests read their switches from the environment and wait on real processes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use atelier_oci::testing::{REGISTRY, Registry, layer, push};
use atelier_oci::{ImageStore, OciError, RegistryConfig};

fn available(test: &str) -> bool {
    let mut missing = Vec::new();
    if !Path::new(REGISTRY).exists() {
        missing.push("docker-registry");
    }
    if !nix::unistd::geteuid().is_root() {
        missing.push("root");
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

fn store(root: &Path) -> ImageStore {
    ImageStore::open(root, RegistryConfig::default()).unwrap()
}

fn leftovers(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_resolved_pulled_once_and_its_layers_shared() {
    if !available("an_image_is_resolved_pulled_once_and_its_layers_shared") {
        return;
    }
    let registry = Registry::start().await;
    let base = layer(&[
        ("etc/os-release", "ID=atelier-test\n"),
        ("usr/bin/tool", "v1"),
    ]);
    let base_digest = base.sha256_digest();
    let first = push(
        &registry,
        "team/python:3.11",
        "amd64",
        vec![base.clone(), layer(&[("opt/app/one.py", "print(1)")])],
    )
    .await;
    let second = push(
        &registry,
        "team/torch:2.5",
        "amd64",
        vec![base, layer(&[("opt/app/two.py", "print(2)")])],
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path());

    let resolved = images.resolve(&first, "amd64").await.unwrap();
    assert!(resolved.digest.starts_with("sha256:"));
    assert_eq!(resolved.layers.len(), 2);
    assert_eq!(resolved.layers[0].digest, base_digest);
    assert_eq!(resolved.config["config"]["User"], "1000");
    assert!(resolved.size > resolved.layers.iter().map(|l| l.size).sum::<u64>());

    let seen = Mutex::new(Vec::new());
    let pulled = images
        .pull(&resolved, &|done, total| {
            seen.lock().unwrap().push((done, total))
        })
        .await
        .unwrap();
    let seen = seen.into_inner().unwrap();
    let total = resolved.layers.iter().map(|l| l.size).sum::<u64>();
    assert_eq!(
        seen.last(),
        Some(&(total, total)),
        "progress ends at the total"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back"
    );
    assert_eq!(pulled.layers.len(), 2);
    assert_eq!(
        std::fs::read_to_string(pulled.layers[0].join("etc/os-release")).unwrap(),
        "ID=atelier-test\n"
    );
    assert_eq!(
        std::fs::read_to_string(pulled.layers[1].join("opt/app/one.py")).unwrap(),
        "print(1)"
    );
    assert_eq!(images.downloads(), 2);

    // Pulling it again downloads nothing; a second image shares the base layer.
    images.pull(&resolved, &|_, _| {}).await.unwrap();
    assert_eq!(images.downloads(), 2);
    let other = images.resolve(&second, "amd64").await.unwrap();
    let pulled_other = images.pull(&other, &|_, _| {}).await.unwrap();
    assert_eq!(
        pulled_other.layers[0], pulled.layers[0],
        "one directory for the shared layer"
    );
    assert_eq!(images.downloads(), 3);
    assert!(leftovers(root.path()).is_empty());

    // The store is root's alone: layers keep the image's owners and setuid bits.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_one_layer_download_it_once() {
    if !available("concurrent_pulls_of_one_layer_download_it_once") {
        return;
    }
    let registry = Registry::start().await;
    // A layer big enough that the pulls overlap.
    let big: String = (0..400_000).map(|i| format!("{i:08}\n")).collect();
    let shared = layer(&[("data/big.txt", &big)]);
    let a = push(
        &registry,
        "team/a:1",
        "amd64",
        vec![shared.clone(), layer(&[("a", "a")])],
    )
    .await;
    let b = push(
        &registry,
        "team/b:1",
        "amd64",
        vec![shared, layer(&[("b", "b")])],
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path());
    let (ra, rb) = (
        images.resolve(&a, "amd64").await.unwrap(),
        images.resolve(&b, "amd64").await.unwrap(),
    );
    let (pa, pb) = tokio::join!(images.pull(&ra, &|_, _| {}), images.pull(&rb, &|_, _| {}));
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    assert_eq!(pa.layers[0], pb.layers[0]);
    assert_eq!(
        images.downloads(),
        3,
        "the shared layer once, each top layer once"
    );
    assert_eq!(
        std::fs::read_to_string(pa.layers[0].join("data/big.txt")).unwrap(),
        big
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_and_bad_images_fail_with_their_reason_and_cache_nothing() {
    if !available("bad_references_and_bad_images_fail_with_their_reason_and_cache_nothing") {
        return;
    }
    let registry = Registry::start().await;
    let good = push(
        &registry,
        "team/ok:1",
        "amd64",
        vec![layer(&[("ok", "ok")])],
    )
    .await;
    let arm = push(
        &registry,
        "team/arm:1",
        "arm64",
        vec![layer(&[("arm", "arm")])],
    )
    .await;
    let damaged_layer = layer(&[("secret", "original contents")]);
    let damaged_digest = damaged_layer.sha256_digest();
    let damaged = push(&registry, "team/damaged:1", "amd64", vec![damaged_layer]).await;
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path());

    let error = images
        .resolve("not a reference!", "amd64")
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::InvalidReference(..)), "{error}");
    let error = images
        .resolve(&format!("{}/team/ok:missing", registry.host), "amd64")
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::NotFound(_)), "{error}");
    let error = images
        .resolve(&format!("{}/team/nobody:1", registry.host), "amd64")
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::NotFound(_)), "{error}");
    let error = images.resolve(&arm, "amd64").await.unwrap_err();
    assert!(
        matches!(&error, OciError::WrongArchitecture { found, .. } if found == "linux/arm64"),
        "{error}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = images
        .resolve(&format!("{closed}/team/ok:1"), "amd64")
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::Unreachable(..)), "{error}");
    assert!(error.is_transient());
    let small = ImageStore::open(
        &root.path().join("small"),
        RegistryConfig {
            max_image_bytes: 100,
            ..RegistryConfig::default()
        },
    )
    .unwrap();
    let error = small.resolve(&good, "amd64").await.unwrap_err();
    assert!(
        matches!(error, OciError::TooLarge { limit: 100, .. }),
        "{error}"
    );

    // A blob the registry serves with other bytes than its digest says: nothing is kept.
    let resolved = images.resolve(&damaged, "amd64").await.unwrap();
    let blob = registry.blob_file(&damaged_digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let error = images.pull(&resolved, &|_, _| {}).await.unwrap_err();
    assert!(matches!(error, OciError::Corrupt(..)), "{error}");
    assert!(!images.layer_dir(&damaged_digest).unwrap().exists());
    let hex = damaged_digest.strip_prefix("sha256:").unwrap();
    assert!(!root.path().join("blobs/sha256").join(hex).exists());
    assert!(
        leftovers(root.path()).is_empty(),
        "{:?}",
        leftovers(root.path())
    );
    assert_eq!(
        std::fs::read_dir(root.path().join("images"))
            .unwrap()
            .count(),
        0
    );

    // Nothing of the above stops a good image.
    let resolved = images.resolve(&good, "amd64").await.unwrap();
    images.pull(&resolved, &|_, _| {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebooks_changes_are_saved_as_an_image_that_starts_elsewhere_with_them() {
    if !available("a_notebooks_changes_are_saved_as_an_image_that_starts_elsewhere_with_them") {
        return;
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let registry = Registry::start().await;
    let base = push(
        &registry,
        "team/base:1",
        "amd64",
        vec![layer(&[
            ("usr/bin/tool", "old tool"),
            ("etc/app.conf", "old"),
            ("etc/other.conf", "other"),
        ])],
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path());
    let resolved = images.resolve(&base, "amd64").await.unwrap();
    images.pull(&resolved, &|_, _| {}).await.unwrap();

    // What a notebook's overlay upper directory holds after a `pip install` and some edits.
    let upper = tempfile::tempdir().unwrap();
    let up = upper.path();
    std::fs::create_dir_all(up.join("opt/conda/lib/site-packages/pkg")).unwrap();
    std::fs::write(
        up.join("opt/conda/lib/site-packages/pkg/__init__.py"),
        "VERSION = '1.0'\n",
    )
    .unwrap();
    std::os::unix::fs::chown(
        up.join("opt/conda/lib/site-packages/pkg/__init__.py"),
        Some(1000),
        Some(1000),
    )
    .unwrap();
    std::fs::hard_link(
        up.join("opt/conda/lib/site-packages/pkg/__init__.py"),
        up.join("opt/conda/lib/site-packages/pkg/same.py"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "pkg/__init__.py",
        up.join("opt/conda/lib/site-packages/alias.py"),
    )
    .unwrap();
    std::fs::create_dir_all(up.join("usr/bin")).unwrap();
    nix::sys::stat::mknod(
        &up.join("usr/bin/tool"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
    .unwrap();
    std::fs::create_dir_all(up.join("etc")).unwrap();
    xattr::set(up.join("etc"), "trusted.overlay.opaque", b"y").unwrap();
    std::fs::write(up.join("etc/app.conf"), "new").unwrap();
    nix::unistd::mkfifo(&up.join("etc/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();

    assert!(
        !images
            .exists(&format!("{}/team/saved:v1", registry.host))
            .await
            .unwrap()
    );
    let saved = images
        .commit(
            &resolved,
            up,
            &format!("{}/team/saved:v1", registry.host),
            &Default::default(),
        )
        .await
        .unwrap();
    assert!(
        images
            .exists(&format!("{}/team/saved:v1", registry.host))
            .await
            .unwrap()
    );
    assert_eq!(saved.layers.len(), 2);
    assert_eq!(
        saved.layers[0], resolved.layers[0],
        "the base layer is shared, not copied"
    );
    assert_eq!(
        saved.config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        1,
        "the new layer's diff_id is appended"
    );
    // On this host the saved image needs no download.
    let before = images.downloads();
    images.pull(&saved, &|_, _| {}).await.unwrap();
    assert_eq!(images.downloads(), before);

    // Another host pulls it from the registry and gets the changes, whiteouts included.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = store(elsewhere.path());
    let pulled = other
        .pull(
            &other.resolve(&saved.reference, "amd64").await.unwrap(),
            &|_, _| {},
        )
        .await
        .unwrap();
    let top = &pulled.layers[1];
    let init = top.join("opt/conda/lib/site-packages/pkg/__init__.py");
    assert_eq!(std::fs::read_to_string(&init).unwrap(), "VERSION = '1.0'\n");
    let meta = std::fs::metadata(&init).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert_eq!(
        std::fs::metadata(top.join("opt/conda/lib/site-packages/pkg/same.py"))
            .unwrap()
            .ino(),
        meta.ino(),
        "hard links stay links"
    );
    assert_eq!(
        std::fs::read_link(top.join("opt/conda/lib/site-packages/alias.py")).unwrap(),
        Path::new("pkg/__init__.py")
    );
    let whiteout = std::fs::symlink_metadata(top.join("usr/bin/tool")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(
        xattr::get(top.join("etc"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        std::fs::read_to_string(top.join("etc/app.conf")).unwrap(),
        "new"
    );
    assert!(!top.join("etc/pipe").exists(), "FIFOs are not saved");

    // Deleted with force: the tag no longer resolves; deleting again is not an error.
    images.delete(&saved.reference).await.unwrap();
    assert!(!images.exists(&saved.reference).await.unwrap());
    images.delete(&saved.reference).await.unwrap();
    assert!(
        images.exists(&base).await.unwrap(),
        "the base image is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_evicts_the_least_recently_used_images_that_no_notebook_uses() {
    if !available("the_cache_evicts_the_least_recently_used_images_that_no_notebook_uses") {
        return;
    }
    let registry = Registry::start().await;
    let base = layer(&[("usr/lib/base.so", &"b".repeat(10_000))]);
    let base_digest = base.sha256_digest();
    let only_c = layer(&[("opt/c", &"c".repeat(50_000))]);
    let c_digest = only_c.sha256_digest();
    let only_a = layer(&[("opt/a", "a")]);
    let a_digest = only_a.sha256_digest();
    let a = push(&registry, "team/a:1", "amd64", vec![base.clone(), only_a]).await;
    let b = push(
        &registry,
        "team/b:1",
        "amd64",
        vec![base, layer(&[("opt/b", "b")])],
    )
    .await;
    let c = push(&registry, "team/c:1", "amd64", vec![only_c]).await;
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path());
    let mut digests = std::collections::HashMap::new();
    // Used in the order c, b, a: c is the least recently used.
    for name in [&c, &b, &a] {
        let resolved = images.resolve(name, "amd64").await.unwrap();
        images.pull(&resolved, &|_, _| {}).await.unwrap();
        images.touch(&resolved.digest).unwrap();
        digests.insert(name.clone(), resolved.digest);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full = images.usage().unwrap();
    assert!(full > 60_000, "{full}");
    let in_use: std::collections::HashSet<String> = [digests[&b].clone()].into();

    let evicted = images.evict(full - 1, &in_use).unwrap();
    assert_eq!(
        evicted,
        [digests[&c].clone()],
        "the least recently used goes first"
    );
    assert!(!images.layer_dir(&c_digest).unwrap().exists());
    assert!(images.usage().unwrap() < full);

    let evicted = images.evict(0, &in_use).unwrap();
    assert_eq!(
        evicted,
        [digests[&a].clone()],
        "never an image a notebook uses"
    );
    assert!(!images.layer_dir(&a_digest).unwrap().exists());
    assert!(
        images.layer_dir(&base_digest).unwrap().exists(),
        "a layer stays while an image left here uses it"
    );
    let left: Vec<String> = images
        .images()
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(left, [digests[&b].clone()]);
    assert!(leftovers(root.path()).is_empty());

    // An evicted image is pulled again when it is next needed.
    let before = images.downloads();
    let again = images.resolve(&c, "amd64").await.unwrap();
    images.pull(&again, &|_, _| {}).await.unwrap();
    assert_eq!(images.downloads(), before + 1);
}

#[tokio::test]
async fn an_image_built_here_is_saved_with_a_notebooks_changes_and_pulled_elsewhere() {
    if !available("an_image_built_here_is_saved_with_a_notebooks_changes_and_pulled_elsewhere") {
        return;
    }
    let registry = Registry::start().await;
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path());
    // The built-in image: made on this host, in no registry.
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("opt/jupyterlab/bin")).unwrap();
    std::fs::write(
        tree.path().join("opt/jupyterlab/bin/jupyter-lab"),
        "#!/bin/sh\n",
    )
    .unwrap();
    let builtin = images
        .build_local(
            "atelier.local/builtin/jupyterlab:1",
            None,
            &[tree.path().to_owned()],
            "amd64",
            serde_json::json!({"User": "1000:100"}),
            "test",
        )
        .await
        .unwrap();
    // A notebook on it installs a package; saving it pushes the built-in layer too.
    let upper = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(upper.path().join("opt/pkg")).unwrap();
    std::fs::write(upper.path().join("opt/pkg/__init__.py"), "X = 1\n").unwrap();
    let target = format!("{}/team/saved:1", registry.host);
    let saved = images
        .commit(&builtin, upper.path(), &target, &Default::default())
        .await
        .unwrap();
    assert_eq!(saved.layers.len(), 2);
    assert_eq!(saved.layers[0], builtin.layers[0]);
    assert_eq!(saved.config["config"]["User"], "1000:100");

    // Another host pulls it whole from the registry.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = store(elsewhere.path());
    let resolved = other.resolve(&target, "amd64").await.unwrap();
    let pulled = other.pull(&resolved, &|_, _| {}).await.unwrap();
    assert_eq!(other.downloads(), 2);
    assert!(
        pulled.layers[0]
            .join("opt/jupyterlab/bin/jupyter-lab")
            .is_file()
    );
    assert!(pulled.layers[1].join("opt/pkg/__init__.py").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_disappears_mid_pull_fails_the_pull_and_leaves_nothing_behind() {
    if !available("a_registry_that_disappears_mid_pull_fails_the_pull_and_leaves_nothing_behind") {
        return;
    }
    let registry = Registry::start().await;
    // Incompressible, so the download takes many reads: the registry goes after the first.
    let mut noise = String::with_capacity(24 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < (24 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push_str(&format!("{x:016x}"));
    }
    let reference = push(
        &registry,
        "team/big:1",
        "amd64",
        vec![layer(&[("data/noise", &noise)])],
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path());
    let resolved = images.resolve(&reference, "amd64").await.unwrap();
    let registry = Mutex::new(Some(registry));
    let seen = Mutex::new(0u64);
    let outcome = images
        .pull(&resolved, &|done, _| {
            *seen.lock().unwrap() = done;
            // Dropping the registry kills its process.
            if done > 0 {
                drop(registry.lock().unwrap().take());
            }
        })
        .await;
    let error = outcome.unwrap_err();
    assert!(
        *seen.lock().unwrap() < resolved.size,
        "the pull was cut short"
    );
    assert!(error.is_transient(), "{error:?}");
    assert!(
        leftovers(root.path()).is_empty(),
        "{:?}",
        leftovers(root.path())
    );
    let hex = resolved.layers[0].digest.strip_prefix("sha256:").unwrap();
    assert!(!root.path().join("blobs/sha256").join(hex).exists());
    assert!(!root.path().join(format!("layers/sha256-{hex}")).exists());
    assert!(images.images().unwrap().is_empty());
}
