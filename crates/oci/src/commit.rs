//! A notebook's changes as a new layer: the overlay's upper directory back into an OCI layer
//! tarball (overlayfs whiteouts become `.wh.` entries again), for save-as-image.
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// A layer built from an upper directory, gzipped.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    /// The gzipped tarball.
    pub data: Vec<u8>,
    /// `sha256:` of `data` (the layer's digest in the manifest).
    pub digest: String,
    /// `sha256:` of the uncompressed tarball (its `diff_id` in the image configuration).
    pub diff_id: String,
    pub entries: u64,
}

/// Writes everything into a hasher as it goes to the gzip encoder.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Owners as they are on this host mapped to owners as the image has them (a notebook's
/// files are stored as its unprivileged host uid, which is the image's `ma-user`). Ids not
/// listed are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerMap {
    /// `(host uid, image uid)`.
    pub uids: Vec<(u32, u32)>,
    /// `(host gid, image gid)`.
    pub gids: Vec<(u32, u32)>,
}

impl OwnerMap {
    fn uid(&self, host: u32) -> u64 {
        u64::from(Self::map(&self.uids, host))
    }

    fn gid(&self, host: u32) -> u64 {
        u64::from(Self::map(&self.gids, host))
    }

    fn map(pairs: &[(u32, u32)], host: u32) -> u32 {
        pairs
            .iter()
            .find(|(from, _)| *from == host)
            .map_or(host, |(_, to)| *to)
    }
}

/// Builds the layer of `upper` (an overlayfs upper directory): files, directories and symlinks
/// with their owners and modes, hard links as links, a whiteout (character device 0/0) as
/// `.wh.NAME`, an opaque directory with `.wh..wh..opq`. Sockets, FIFOs and other devices
/// are left out. Entries are sorted, so the same tree gives the same layer.
pub fn layer_from_upper(upper: &Path) -> std::io::Result<BuiltLayer> {
    layer_from_upper_mapped(upper, &OwnerMap::default())
}

/// [`layer_from_upper`], with owners mapped by `owners`.
pub fn layer_from_upper_mapped(upper: &Path, owners: &OwnerMap) -> std::io::Result<BuiltLayer> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(Hashing {
        inner: encoder,
        hasher: Sha256::new(),
    });
    builder.follow_symlinks(false);
    let mut entries = 0;
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![upper.to_owned()];
    while let Some(dir) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        children.sort();
        // Visited in order: push in reverse so the stack pops the first name first.
        let mut subdirs = Vec::new();
        for path in children {
            let name = path
                .strip_prefix(upper)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            let kind = meta.file_type();
            if kind.is_char_device() && meta.rdev() == 0 {
                let whiteout = match name.rsplit_once('/') {
                    Some((parent, base)) => format!("{parent}/.wh.{base}"),
                    None => format!(".wh.{name}"),
                };
                append_empty(&mut builder, &whiteout, &meta)?;
                entries += 1;
                continue;
            }
            if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() || kind.is_socket()
            {
                continue;
            }
            if kind.is_file() && meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&key) {
                    let mut header = tar::Header::new_gnu();
                    header.set_metadata(&meta);
                    header.set_uid(owners.uid(meta.uid()));
                    header.set_gid(owners.gid(meta.gid()));
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder.append_link(&mut header, &name, first)?;
                    entries += 1;
                    continue;
                }
                links.insert(key, name.clone());
            }
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_uid(owners.uid(meta.uid()));
            header.set_gid(owners.gid(meta.gid()));
            if kind.is_symlink() {
                header.set_size(0);
                builder.append_link(&mut header, &name, std::fs::read_link(&path)?)?;
            } else if kind.is_dir() {
                header.set_size(0);
                builder.append_data(&mut header, &name, std::io::empty())?;
            } else {
                builder.append_data(&mut header, &name, open_same_file(&path, &meta)?)?;
            }
            entries += 1;
            if kind.is_dir() {
                if xattr::get(&path, "trusted.overlay.opaque")?.as_deref() == Some(b"y") {
                    append_empty(&mut builder, &format!("{name}/.wh..wh..opq"), &meta)?;
                    entries += 1;
                }
                subdirs.push(path);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    let hashing = builder.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    let data = hashing.inner.finish()?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    Ok(BuiltLayer {
        data,
        digest,
        diff_id,
        entries,
    })
}

/// Opens the regular file `path` without following a symlink, and only if it is still the
/// file `meta` describes: the upper directory is a notebook's, and whatever it swaps in
/// while it is read must not make this reader (root) open a file of the host.
fn open_same_file(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(std::io::Error::other(format!(
            "{} changed while it was being saved",
            path.display()
        )));
    }
    Ok(file)
}

fn append_empty<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    like: &std::fs::Metadata,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(like.mtime()).unwrap_or(0));
    builder.append_data(&mut header, name, std::io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_swapped_while_it_is_saved_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "mine").unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(open_same_file(&path, &meta).is_ok());
        // Swapped for a symlink to a host file: not followed. (The listed file is kept
        // elsewhere, so its inode number cannot be reused by the swapped-in file.)
        std::fs::rename(&path, dir.path().join("kept")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert!(open_same_file(&path, &meta).is_err());
        // Swapped for another file: not the one that was listed.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "other").unwrap();
        assert!(open_same_file(&path, &meta).is_err());
    }

    #[test]
    fn owners_are_mapped_back_to_the_images() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let owners = OwnerMap {
            uids: vec![(me, 1000)],
            gids: vec![(nix::unistd::getegid().as_raw(), 100)],
        };
        let layer = layer_from_upper_mapped(dir.path(), &owners).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer.data.as_slice()));
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().uid().unwrap(), 1000);
        assert_eq!(entry.header().gid().unwrap(), 100);
    }
}
