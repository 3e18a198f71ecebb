//! The built-in JupyterLab image made on this host as an OCI image: a Debian root filesystem
//! (mmdebstrap) and a JupyterLab venv from PyPI as two layers in the image store, which then
//! run: the image's own Python imports JupyterLab as `ma-user`. Needs root, mmdebstrap,
//! bubblewrap and the package registries (Debian's and PyPI).
// Tests read their switches from the environment.
#![allow(clippy::disallowed_methods)]
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use atelier_oci::{ImageStore, RegistryConfig};
use atelier_runtime::local::build::{BuildError, Recipe, build_builtin};

fn available(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root");
    }
    for tool in ["/usr/bin/mmdebstrap", "/usr/bin/bwrap"] {
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

#[tokio::test]
async fn the_built_in_image_is_built_once_from_debian_and_pypi_and_runs_jupyterlab() {
    if !available("the_built_in_image_is_built_once_from_debian_and_pypi_and_runs_jupyterlab") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("store"), RegistryConfig::default()).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let recipe = Recipe::new(vec!["jupyterlab==4.6.6".to_owned()]);
    let image = build_builtin(&store, &recipe, &work).await.unwrap();
    assert_eq!(image.reference, recipe.reference());
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.config["config"]["User"], "1000:100");
    assert_eq!(image.config["config"]["WorkingDir"], "/home/ma-user/work");

    // The bottom layer is Debian with ma-user; the top one holds only the venv.
    let base = store.layer_dir(&image.layers[0].digest).unwrap();
    let top = store.layer_dir(&image.layers[1].digest).unwrap();
    let passwd = std::fs::read_to_string(base.join("etc/passwd")).unwrap();
    assert!(passwd.contains("ma-user:x:1000:100:"), "{passwd}");
    let home = std::fs::metadata(base.join("home/ma-user/work")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 100));
    assert!(base.join("usr/bin/python3").exists());
    assert!(top.join("opt/jupyterlab/bin/jupyter-lab").is_file());
    // ma-user owns the environment (pip install in a notebook works), the settings included.
    for path in [
        "opt/jupyterlab",
        "opt/jupyterlab/bin/jupyter-lab",
        "opt/jupyterlab/bin/python",
        "opt/jupyterlab/etc/jupyter",
        "opt/jupyterlab/etc/ipython",
    ] {
        let meta = std::fs::symlink_metadata(top.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 100), "{path}");
    }
    // Except the page settings, which JupyterLab would rewrite at every start.
    let page = std::fs::symlink_metadata(
        top.join("opt/jupyterlab/etc/jupyter/labconfig/page_config.json"),
    )
    .unwrap();
    assert_eq!((page.uid(), page.gid()), (0, 0));
    let python = std::fs::symlink_metadata(base.join("usr/bin/python3")).unwrap();
    assert_eq!(python.uid(), 0, "the system stays root's");
    assert!(
        top.join("opt/jupyterlab/etc/jupyter/labconfig/page_config.json")
            .is_file()
    );
    assert!(
        !top.join("usr/bin/python3").exists(),
        "the venv layer holds only the venv"
    );
    assert!(
        std::fs::read_dir(&work).unwrap().next().is_none(),
        "the build trees are gone"
    );

    // It runs: an overlay of the two layers as the root of a sandbox, as ma-user.
    let merged = dir.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}:{}", top.display(), base.display()).as_str()),
    )
    .unwrap();
    let output = Command::new("bwrap")
        .arg("--ro-bind")
        .arg(&merged)
        .arg("/")
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .args(["--unshare-all", "--die-with-parent", "--clearenv"])
        .args(["--unshare-user", "--uid", "1000", "--gid", "100"])
        .args(["--setenv", "HOME", "/home/ma-user"])
        .args([
            "--",
            "/opt/jupyterlab/bin/python",
            "-c",
            "import os, jupyterlab; print(jupyterlab.__version__, os.getuid())",
        ])
        .output()
        .unwrap();
    let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "4.6.6 1000");

    // Built once: the second call finds it in the store.
    let blobs = || {
        std::fs::read_dir(dir.path().join("store/blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    assert_eq!(build_builtin(&store, &recipe, &work).await.unwrap(), image);
    assert_eq!(blobs(), before);
}

#[tokio::test]
async fn a_recipe_that_cannot_be_built_says_why_and_stores_nothing() {
    if !available("a_recipe_that_cannot_be_built_says_why_and_stores_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("store"), RegistryConfig::default()).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut recipe = Recipe::new(vec!["jupyterlab==4.6.6".to_owned()]);
    recipe.packages.push("atelier-no-such-package".to_owned());
    match build_builtin(&store, &recipe, &work).await {
        Err(BuildError::Step { step, detail }) => {
            assert!(step.contains("mmdebstrap"), "{step}");
            assert!(detail.contains("atelier-no-such-package"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(store.images().unwrap().is_empty());
    assert!(std::fs::read_dir(&work).unwrap().next().is_none());
}
