//! What the local runtime needs from the host, checked when the server boots so that a
//! missing piece is named at once (with the package to install) rather than surfacing as a
//! failed start step.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::LocalConfig;
use super::network::Egress;
use super::sys::{idmapped_bind, mapping_userns};
use super::uids::check_range;

// Which host tools the sandboxes will find is the host's PATH, not configuration.
#[allow(clippy::disallowed_methods)]
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Every directory from `/` to `path` lets other uids through (`o+x`)?
fn traversable(path: &Path) -> Result<(), String> {
    for ancestor in path.ancestors() {
        let mode = std::fs::metadata(ancestor)
            .map_err(|e| format!("{}: {e}", ancestor.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) does not let the notebooks' uids through: chmod o+x it or choose a directory elsewhere",
                ancestor.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// Everything the runtime cannot run without, as one message naming what to install or
/// change; fixes the one thing that is safe to fix (`/dev/net/tun`'s mode).
pub fn check(config: &LocalConfig) -> Result<(), String> {
    let mut missing: Vec<String> = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            missing.push(what.to_owned());
        }
    };
    need(on_path("bwrap"), "bwrap (apt-get install bubblewrap)");
    need(on_path("nsenter"), "nsenter (apt-get install util-linux)");
    need(
        on_path("mkfs.ext4"),
        "mkfs.ext4 (apt-get install e2fsprogs)",
    );
    if config.egress == Egress::Slirp4netns {
        need(
            on_path("slirp4netns"),
            "slirp4netns (apt-get install slirp4netns)",
        );
        need(on_path("nft"), "nft (apt-get install nftables)");
        match std::fs::metadata("/dev/net/tun") {
            Ok(metadata) => {
                let mode = metadata.permissions().mode();
                if mode & 0o006 != 0o006 {
                    // Opening it only lets a process make tap devices in namespaces where it
                    // holds CAP_NET_ADMIN; distributions' udev rules make it 0666.
                    match std::fs::set_permissions(
                        "/dev/net/tun",
                        std::fs::Permissions::from_mode(0o666),
                    ) {
                        Ok(()) => tracing::info!(
                            "made /dev/net/tun 0666 (as udev does) so that slirp4netns can run as the notebooks' uids"
                        ),
                        Err(error) => missing.push(format!(
                            "/dev/net/tun readable and writable by all (chmod 0666 /dev/net/tun: {error})"
                        )),
                    }
                }
            }
            Err(_) => missing.push("/dev/net/tun (the tun kernel module)".to_owned()),
        }
    }
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let clone_allowed = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .map(|v| v.trim() != "0")
        .unwrap_or(true);
    if userns == 0 || !clone_allowed {
        missing.push(
            "unprivileged user namespaces (sysctl user.max_user_namespaces > 0 and kernel.unprivileged_userns_clone=1)"
                .to_owned(),
        );
    }
    if let Err(error) = check_range(&config.uids) {
        missing.push(error);
    }
    if let Some(parent) = config.data_dir.parent()
        && let Err(error) = traversable(parent)
    {
        missing.push(format!("a data dir the notebooks' uids can reach: {error}"));
    }
    if let Err(error) = traversable(&config.image_dir) {
        missing.push(format!(
            "an image dir the notebooks' uids can read: {error}"
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the local runtime cannot run notebooks on this host; it needs: {}",
            missing.join("; ")
        ))
    }
}

/// Whether an idmapped bind mount works on the data dir's filesystem (the warm pool uses one
/// per claim).
pub fn idmapped_mounts_work(data_dir: &Path) -> bool {
    let dir = data_dir.join(format!(".idmap-check-{}", std::process::id()));
    let (source, target) = (dir.join("source"), dir.join("target"));
    let worked = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&source)?;
        std::fs::create_dir_all(&target)?;
        let userns = mapping_userns(0, 65_534)?;
        idmapped_bind(&source, &target, &userns)?;
        Ok(())
    })();
    if worked.is_ok() {
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    } else if let Err(error) = &worked {
        tracing::debug!(%error, "idmapped mount check failed");
    }
    let _ = std::fs::remove_dir_all(&dir);
    worked.is_ok()
}
