//! The built-in JupyterLab image as an OCI image, made on this host from the package
//! registries it can reach: a Debian root filesystem from Debian's packages (`mmdebstrap`,
//! with the ModelArts conventions: user `ma-user`, uid 1000, gid 100, work dir
//! `/home/ma-user/work`) as the bottom layer, and a virtual environment with JupyterLab from
//! PyPI, installed by the root filesystem's own Python inside a bubblewrap sandbox on an
//! overlay of it, as the layer on top. Both go into the image store like any pulled image
//! (`atelier.local/builtin/jupyterlab:{recipe hash}`), so a recipe builds once per host.
//!
//! The build uses the host's network, name resolution and trust store (a TLS-intercepting
//! proxy's CA included), never the notebooks' sandboxes: it is an operator's action
//! (`atelier image pull`), not a tenant's.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use atelier_oci::{ImageStore, OciError, Resolved};
use sha2::Digest as _;
use tokio::process::Command;

use super::image::{KERNEL_CONFIG, PAGE_CONFIG, SETTINGS_OVERRIDES};

/// What the built-in image is made of. A change gives a new image (its tag is a hash of it).
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The Debian suite of the root filesystem, e.g. `bookworm`.
    pub suite: String,
    /// Debian mirror; `None`: mmdebstrap's default (the host's apt sources).
    pub mirror: Option<String>,
    /// Debian packages beyond `minbase`.
    pub packages: Vec<String>,
    /// What pip installs into `/opt/jupyterlab`.
    pub jupyter_packages: Vec<String>,
    /// `amd64`, `arm64`, ... (the host's).
    pub architecture: String,
}

impl Recipe {
    /// The default recipe: Debian bookworm's Python 3.11 and the given JupyterLab packages.
    pub fn new(jupyter_packages: Vec<String>) -> Recipe {
        Recipe {
            suite: "bookworm".to_owned(),
            mirror: None,
            packages: [
                "python3",
                "python3-venv",
                "ca-certificates",
                "tini",
                "procps",
                // `sshd -i` for the notebook's SSH endpoint runs from the image.
                "openssh-server",
            ]
            .map(str::to_owned)
            .to_vec(),
            jupyter_packages,
            architecture: host_architecture().to_owned(),
        }
    }

    /// The image's reference in the store.
    pub fn reference(&self) -> String {
        let mut hasher = sha2::Sha256::new();
        // Bump the first field when the build steps change what an image holds.
        for part in [
            "recipe-3",
            &self.suite,
            self.mirror.as_deref().unwrap_or(""),
            &self.packages.join(","),
            &self.jupyter_packages.join(","),
            &self.architecture,
            PAGE_CONFIG,
            SETTINGS_OVERRIDES,
            KERNEL_CONFIG,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let hash = hex::encode(hasher.finalize());
        format!("atelier.local/builtin/jupyterlab:{}", &hash[..16])
    }
}

/// The OCI name of this host's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the built-in image failed at {step}: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("building the built-in image: {0}")]
    Store(#[from] OciError),
    #[error("building the built-in image: {0}")]
    Io(#[from] std::io::Error),
}

async fn run(step: &'static str, command: &mut Command) -> Result<(), BuildError> {
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| BuildError::Step {
            step,
            detail: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    // The end says what went wrong; the whole of pip's or apt's log does not fit a reason.
    let tail: Vec<&str> = text.trim().lines().rev().take(8).collect();
    Err(BuildError::Step {
        step,
        detail: format!(
            "{} ({})",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            output.status
        ),
    })
}

/// Unmounts `path` when dropped (the build's overlay, also when the build fails).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Makes the built-in image of `recipe` in `store` unless it is there already; `work` is a
/// directory on the store's filesystem for the build's trees (removed afterwards).
pub async fn build_builtin(
    store: &ImageStore,
    recipe: &Recipe,
    work: &Path,
) -> Result<Resolved, BuildError> {
    let reference = recipe.reference();
    if let Some(image) = store.local_image(&reference)? {
        return Ok(image);
    }
    tracing::info!(%reference, "building the built-in JupyterLab image from Debian packages and PyPI");
    let dir = work.join(format!("build-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let (base, upper, scratch, merged) = (
        dir.join("base"),
        dir.join("upper"),
        dir.join("scratch"),
        dir.join("merged"),
    );
    for d in [&upper, &scratch, &merged] {
        std::fs::create_dir_all(d)?;
    }
    let outcome = build_in(store, recipe, &reference, &base, &upper, &scratch, &merged).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn build_in(
    store: &ImageStore,
    recipe: &Recipe,
    reference: &str,
    base: &Path,
    upper: &Path,
    scratch: &Path,
    merged: &Path,
) -> Result<Resolved, BuildError> {
    // 1. The root filesystem, with ma-user (uid 1000, gid 100 `users`) and its work dir.
    let mut mmdebstrap = Command::new("mmdebstrap");
    mmdebstrap
        .args(["--quiet", "--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--architectures={}", recipe.architecture))
        .arg(format!("--include={}", recipe.packages.join(",")))
        .arg("--customize-hook=chroot \"$1\" useradd --uid 1000 --gid 100 --create-home --home-dir /home/ma-user --shell /bin/bash ma-user")
        .arg("--customize-hook=install -d -o 1000 -g 100 -m 0755 \"$1/home/ma-user/work\"")
        .arg("--customize-hook=rm -rf \"$1\"/var/cache/apt/* \"$1\"/var/lib/apt/lists/* \"$1\"/var/log/*")
        .arg(&recipe.suite)
        .arg(base);
    if let Some(mirror) = &recipe.mirror {
        mmdebstrap.arg(mirror);
    }
    run("the Debian root filesystem (mmdebstrap)", &mut mmdebstrap).await?;

    // 2. JupyterLab, installed by the image's own Python on an overlay of the root filesystem,
    //    so that the upper directory holds exactly the new layer.
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(
            format!(
                "lowerdir={},upperdir={},workdir={}",
                base.display(),
                upper.display(),
                scratch.display()
            )
            .as_str(),
        ),
    )
    .map_err(|e| BuildError::Step {
        step: "the build overlay",
        detail: e.to_string(),
    })?;
    let mounted = Mounted(merged.to_owned());
    let mut pip = Command::new("bwrap");
    pip.arg("--bind")
        .arg(merged)
        .arg("/")
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .args(["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"])
        // The host's trust store: package registries may sit behind a TLS-intercepting proxy.
        .args([
            "--ro-bind",
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/ssl/certs/ca-certificates.crt",
        ])
        .args([
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--clearenv",
        ])
        .args([
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/root",
        ])
        .args(["--", "/bin/sh", "-c"])
        .arg(format!(
            "python3 -m venv /opt/jupyterlab && /opt/jupyterlab/bin/pip install --quiet \
             --disable-pip-version-check --no-cache-dir {} && \
             chown -R -h 1000:100 /opt/jupyterlab && /opt/jupyterlab/bin/jupyter-lab --version",
            recipe
                .jupyter_packages
                .iter()
                .map(|p| shell_quote(p))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    run("JupyterLab from PyPI (pip install)", &mut pip).await?;
    // ma-user owns the environment, as in ModelArts' images: `pip install` in a notebook
    // works, and save-as-image keeps what it installed.
    for (path, text) in [
        (
            "opt/jupyterlab/etc/jupyter/labconfig/page_config.json",
            PAGE_CONFIG,
        ),
        (
            "opt/jupyterlab/share/jupyter/lab/settings/overrides.json",
            SETTINGS_OVERRIDES,
        ),
        (
            "opt/jupyterlab/etc/ipython/ipython_kernel_config.py",
            KERNEL_CONFIG,
        ),
    ] {
        let file = merged.join(path);
        std::fs::create_dir_all(file.parent().expect("a file in a directory"))?;
        std::fs::write(&file, text)?;
        let mut owned = file.as_path();
        while let Some(parent) = owned
            .parent()
            .filter(|p| p.starts_with(merged.join("opt/jupyterlab")))
        {
            std::os::unix::fs::lchown(owned, Some(1000), Some(100))?;
            owned = parent;
        }
        std::os::unix::fs::lchown(owned, Some(1000), Some(100))?;
    }
    // JupyterLab rewrites its page settings at every start when it may: root's, they stay
    // as the image has them, so a notebook that changed nothing has no changes outside its
    // work dir (and a warm sandbox can serve its next start).
    for path in [
        "opt/jupyterlab/etc/jupyter/labconfig",
        "opt/jupyterlab/etc/jupyter/labconfig/page_config.json",
    ] {
        std::os::unix::fs::lchown(merged.join(path), Some(0), Some(0))?;
    }
    drop(mounted);

    // 3. Both trees as layers of one image in the store.
    let config = serde_json::json!({
        "User": "1000:100",
        "WorkingDir": "/home/ma-user/work",
        "Env": [
            "PATH=/opt/jupyterlab/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME=/home/ma-user",
            "LANG=C.UTF-8",
            "SHELL=/bin/bash",
        ],
        "Entrypoint": ["/usr/bin/tini", "--"],
        "Cmd": ["jupyter-lab"],
        "Labels": {
            "io.atelier.image": "builtin-jupyterlab",
            "io.atelier.jupyter-packages": recipe.jupyter_packages.join(" "),
        },
    });
    Ok(store
        .build_local(
            reference,
            None,
            &[base.to_owned(), upper.to_owned()],
            &recipe.architecture,
            config,
            "atelier: built-in JupyterLab image",
        )
        .await?)
}

/// `text` as one word for `sh -c`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_follows_the_recipe() {
        let recipe = Recipe::new(vec!["jupyterlab==4.6.6".to_owned()]);
        let reference = recipe.reference();
        assert!(reference.starts_with("atelier.local/builtin/jupyterlab:"));
        assert_eq!(reference, recipe.clone().reference(), "stable");
        let mut other = recipe.clone();
        other.jupyter_packages.push("numpy".to_owned());
        assert_ne!(other.reference(), reference);
    }

    #[test]
    fn package_names_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("a==1"), "'a==1'");
        assert_eq!(shell_quote("x'; rm -rf /"), "'x'\\''; rm -rf /'");
    }
}
