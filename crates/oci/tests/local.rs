//! Images built on this host (`atelier.local/…`): directories become layers in the same store
//! as pulled images, reproducibly, without any registry. Needs root (layers keep owners).
// Tests read their switches from the environment.
#![allow(clippy::disallowed_methods)]
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use atelier_oci::{ImageStore, OciError, RegistryConfig};
use serde_json::json;

fn skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    assert!(
        std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").as_deref() != Ok("1"),
        "{test} needs root"
    );
    eprintln!("skipping {test}: needs root");
    true
}

/// A tree like a tiny root filesystem: a program owned by root, a home owned by uid 1000,
/// a symlink.
fn rootfs(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::write(
        dir.join("usr/bin/tool"),
        format!("#!/bin/sh\necho {version}\n"),
    )
    .unwrap();
    std::fs::set_permissions(dir.join("usr/bin/tool"), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("home/ma-user/work")).unwrap();
    for path in ["home/ma-user", "home/ma-user/work"] {
        std::os::unix::fs::chown(dir.join(path), Some(1000), Some(100)).unwrap();
    }
}

fn blobs(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn directories_become_an_image_in_the_store_that_resolves_and_pulls_without_a_registry() {
    if skip("directories_become_an_image_in_the_store_that_resolves_and_pulls_without_a_registry") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (base_dir, app_dir) = (work.path().join("base"), work.path().join("app"));
    rootfs(&base_dir, "1");
    std::fs::create_dir_all(app_dir.join("opt/app")).unwrap();
    std::fs::write(app_dir.join("opt/app/run.py"), "print('hi')\n").unwrap();
    let root = work.path().join("store");
    let store = ImageStore::open(&root, RegistryConfig::default()).unwrap();

    let reference = "atelier.local/builtin/jupyterlab:1";
    let config = json!({"User": "1000:100", "WorkingDir": "/home/ma-user/work", "Env": ["A=1"]});
    let built = store
        .build_local(
            reference,
            None,
            &[base_dir.clone(), app_dir.clone()],
            "amd64",
            config.clone(),
            "test: build",
        )
        .await
        .unwrap();
    assert_eq!(built.layers.len(), 2);
    assert_eq!(built.config["config"]["User"], "1000:100");
    assert_eq!(
        built.config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        2
    );
    // The layers are unpacked in the store with the tree's owners and modes.
    let bottom = store.layer_dir(&built.layers[0].digest).unwrap();
    let home = std::fs::metadata(bottom.join("home/ma-user")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 100));
    let tool = std::fs::metadata(bottom.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read_link(bottom.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let top = store.layer_dir(&built.layers[1].digest).unwrap();
    assert!(top.join("opt/app/run.py").is_file());

    // Resolve and pull find it here: nothing is downloaded, no registry is asked.
    let resolved = store.resolve(reference, "amd64").await.unwrap();
    assert_eq!(resolved, built);
    let pulled = store.pull(&resolved, &|_, _| {}).await.unwrap();
    assert_eq!(pulled.layers, vec![bottom.clone(), top.clone()]);
    assert_eq!(store.downloads(), 0);
    assert!(matches!(
        store.resolve(reference, "arm64").await,
        Err(OciError::WrongArchitecture { .. })
    ));
    assert!(matches!(
        store
            .resolve("atelier.local/builtin/other:1", "amd64")
            .await,
        Err(OciError::NotFound(_))
    ));

    // The same directories give the same image: nothing new is stored.
    let stored = blobs(&root);
    let again = store
        .build_local(
            reference,
            None,
            &[base_dir.clone(), app_dir.clone()],
            "amd64",
            config.clone(),
            "test: build",
        )
        .await
        .unwrap();
    assert_eq!(again.digest, built.digest);
    assert_eq!(blobs(&root), stored);

    // A change makes a new image; the earlier one stays, by digest.
    std::fs::write(app_dir.join("opt/app/run.py"), "print('changed')\n").unwrap();
    let changed = store
        .build_local(
            reference,
            None,
            &[base_dir.clone(), app_dir.clone()],
            "amd64",
            config.clone(),
            "test: build",
        )
        .await
        .unwrap();
    assert_ne!(changed.digest, built.digest);
    assert_eq!(
        changed.layers[0], built.layers[0],
        "the unchanged layer is shared"
    );
    assert_eq!(
        store.resolve(reference, "amd64").await.unwrap().digest,
        changed.digest
    );
    let images = store.images().unwrap();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(
        images
            .iter()
            .any(|i| i.reference == format!("{reference}@{}", built.digest))
    );

    // On a base: its layers and configuration, plus the new layer and settings on top.
    let extra = work.path().join("extra");
    std::fs::create_dir_all(extra.join("etc")).unwrap();
    std::fs::write(extra.join("etc/motd"), "hello\n").unwrap();
    let derived = store
        .build_local(
            "atelier.local/team/derived:2",
            Some(&changed),
            &[extra],
            "amd64",
            json!({"Env": ["A=2"]}),
            "test: derive",
        )
        .await
        .unwrap();
    assert_eq!(derived.layers.len(), 3);
    assert_eq!(&derived.layers[..2], &changed.layers[..]);
    assert_eq!(
        derived.config["config"]["User"], "1000:100",
        "kept from the base"
    );
    assert_eq!(derived.config["config"]["Env"], json!(["A=2"]));
    assert_eq!(derived.config["history"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn only_local_names_are_built_and_a_base_must_be_in_the_store() {
    if skip("only_local_names_are_built_and_a_base_must_be_in_the_store") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("tree");
    rootfs(&dir, "1");
    let store = ImageStore::open(&work.path().join("store"), RegistryConfig::default()).unwrap();
    for reference in [
        "registry.example.com/ns/name:1",
        "atelier.local/ns/name@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "not a reference",
    ] {
        let refused = store
            .build_local(
                reference,
                None,
                std::slice::from_ref(&dir),
                "amd64",
                json!({}),
                "x",
            )
            .await;
        assert!(
            matches!(refused, Err(OciError::InvalidReference(..))),
            "{reference}: {refused:?}"
        );
    }
    let base = store
        .build_local(
            "atelier.local/ns/base:1",
            None,
            std::slice::from_ref(&dir),
            "amd64",
            json!({}),
            "x",
        )
        .await
        .unwrap();
    // The base's layers are gone from the store (evicted): building on it is refused, and
    // pulling the base says it must be built again rather than asking a registry.
    store.evict(0, &Default::default()).unwrap();
    let refused = store
        .build_local(
            "atelier.local/ns/derived:1",
            Some(&base),
            std::slice::from_ref(&dir),
            "amd64",
            json!({}),
            "x",
        )
        .await;
    assert!(matches!(refused, Err(OciError::NotFound(_))), "{refused:?}");
    let pulled = store.pull(&base, &|_, _| {}).await;
    assert!(
        matches!(pulled, Err(OciError::NotFound(ref m)) if m.contains("build the image again")),
        "{pulled:?}"
    );
    assert!(
        std::fs::read_dir(work.path().join("store/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}
