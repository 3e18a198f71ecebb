//! One layer tarball into one directory, ready to be a lower layer of an overlay mount.
//!
//! OCI whiteouts become overlayfs's: `.wh.NAME` a character device 0/0 named `NAME`, and
//! `.wh..wh..opq` the `trusted.overlay.opaque` attribute on its directory. The layer comes from
//! whoever registered the image, so it is treated as hostile: an entry that would leave the
//! directory (`..`, a path through a symlink, a hard link to something outside) fails the
//! unpack instead of being skipped; device nodes and FIFOs are dropped (the sandbox has its own
//! `/dev`); extended attributes are not restored, so an image cannot set overlayfs's own
//! `trusted.overlay.*` attributes or file capabilities.
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// The compression of a layer with `media_type`, or `None` for a media type that is not
    /// a layer this store can unpack (zstd, foreign layers, artifacts).
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry `{0}` would leave the layer")]
    Escapes(String),
    #[error("entry `{path}`: {source}")]
    Entry {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What an unpack did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub skipped_devices: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Unpacks the layer in `blob` into `dst` (an empty directory), keeping the image's owners
/// and modes. Needs `CAP_MKNOD` for whiteouts and `CAP_CHOWN` for owners (the server runs
/// as root).
pub fn unpack_layer(
    blob: &Path,
    compression: Compression,
    dst: &Path,
) -> Result<UnpackStats, UnpackError> {
    let file = BufReader::new(File::open(blob)?);
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
    };
    unpack_reader(reader, dst)
}

/// [`unpack_layer`] from an uncompressed tar stream.
pub fn unpack_reader(reader: impl Read, dst: &Path) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut stats = UnpackStats::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let shown = raw.display().to_string();
        let relative = relative_path(&raw).ok_or_else(|| UnpackError::Escapes(shown.clone()))?;
        stats.entries += 1;
        if entry.header().entry_type() == EntryType::Regular {
            stats.bytes += entry.header().size().unwrap_or(0);
        }
        let Some(name) = relative.file_name().and_then(|n| n.to_str()) else {
            // The root directory itself (`./`): its owner and mode are the image's.
            continue;
        };
        if name == OPAQUE_MARKER {
            let dir = inside(dst, relative.parent().unwrap_or(Path::new("")), &shown)?;
            std::fs::create_dir_all(&dir)?;
            xattr::set(&dir, "trusted.overlay.opaque", b"y").map_err(|source| {
                UnpackError::Entry {
                    path: shown.clone(),
                    source,
                }
            })?;
            stats.opaque_dirs += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(UnpackError::Escapes(shown));
            }
            let parent = inside(dst, relative.parent().unwrap_or(Path::new("")), &shown)?;
            std::fs::create_dir_all(&parent)?;
            let target = parent.join(hidden);
            remove_existing(&target)?;
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|errno| UnpackError::Entry {
                path: shown.clone(),
                source: std::io::Error::from(errno),
            })?;
            stats.whiteouts += 1;
            continue;
        }
        match entry.header().entry_type() {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                stats.skipped_devices += 1;
                continue;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| UnpackError::Escapes(shown.clone()))?;
                if relative_path(&target).is_none() {
                    return Err(UnpackError::Escapes(format!(
                        "{shown} (a hard link to {})",
                        target.display()
                    )));
                }
            }
            _ => {}
        }
        // `unpack_in` creates parents inside `dst` only, refuses parents that resolve outside
        // it (through symlinks) and hard links to outside; it skips `..` paths, which
        // `relative_path` has refused already.
        let unpacked = entry.unpack_in(dst).map_err(|source| UnpackError::Entry {
            path: shown.clone(),
            source,
        })?;
        if !unpacked {
            return Err(UnpackError::Escapes(shown));
        }
    }
    Ok(stats)
}

/// `path` as a relative path with only normal components (a leading `/` or `./` dropped);
/// `None` if it has a `..`.
fn relative_path(path: &Path) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return None,
            Component::Normal(part) => relative.push(part),
        }
    }
    Some(relative)
}

/// `dst/relative`, refusing a path whose existing part resolves outside `dst` (a symlink in
/// the layer pointing away).
fn inside(dst: &Path, relative: &Path, shown: &str) -> Result<PathBuf, UnpackError> {
    let root = dst.canonicalize()?;
    let mut resolved = root.clone();
    let mut parts = relative.components();
    while let Some(part) = parts.next() {
        resolved.push(part);
        match resolved.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => {
                resolved = resolved
                    .canonicalize()
                    .map_err(|_| UnpackError::Escapes(shown.to_owned()))?;
                if !resolved.starts_with(&root) {
                    return Err(UnpackError::Escapes(shown.to_owned()));
                }
            }
            Ok(_) => {}
            Err(_) => {
                // The rest does not exist yet: plain directories, created by the caller.
                resolved.extend(parts);
                break;
            }
        }
    }
    Ok(resolved)
}

fn remove_existing(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
