//! Layer unpacking: OCI whiteouts become overlayfs whiteouts, owners and modes are the
//! image's, and a hostile layer cannot write outside its directory. Needs root (mknod, chown),
//! as the server has.
// Tests read their switches from the environment.
#![allow(clippy::disallowed_methods)]
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use atelier_oci::unpack::{UnpackError, unpack_reader};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn skip(test: &str) -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").as_deref() != Ok("1"),
        "{test} needs root"
    );
    eprintln!("skipping {test}: needs root");
    true
}

/// A tar stream built entry by entry; names are written raw, so hostile ones (`..`) can be.
struct Layer(Vec<u8>);

impl Layer {
    fn new() -> Layer {
        Layer(Vec::new())
    }

    fn entry(
        mut self,
        name: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
        uid: u64,
    ) -> Layer {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(uid);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn dir(self, name: &str) -> Layer {
        self.entry(name, tar::EntryType::Directory, b"", None, 0o755, 0)
    }

    fn file(self, name: &str, data: &str) -> Layer {
        self.entry(
            name,
            tar::EntryType::Regular,
            data.as_bytes(),
            None,
            0o644,
            0,
        )
    }

    fn symlink(self, name: &str, target: &str) -> Layer {
        self.entry(name, tar::EntryType::Symlink, b"", Some(target), 0o777, 0)
    }

    fn hardlink(self, name: &str, target: &str) -> Layer {
        self.entry(name, tar::EntryType::Link, b"", Some(target), 0o644, 0)
    }

    fn bytes(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

fn unpack(layer: Layer, dst: &Path) -> Result<atelier_oci::UnpackStats, UnpackError> {
    unpack_reader(std::io::Cursor::new(layer.bytes()), dst)
}

#[test]
fn whiteouts_become_overlayfs_whiteouts_and_owners_and_modes_are_kept() {
    if skip("whiteouts_become_overlayfs_whiteouts_and_owners_and_modes_are_kept") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = Layer::new()
        .dir("./")
        .dir("./usr/")
        .dir("./usr/bin/")
        .entry(
            "./usr/bin/tool",
            tar::EntryType::Regular,
            b"#!/bin/sh\n",
            None,
            0o4755,
            0,
        )
        .hardlink("./usr/bin/tool-again", "./usr/bin/tool")
        .symlink("./usr/bin/alias", "tool")
        .entry(
            "./home/ma-user/notes.txt",
            tar::EntryType::Regular,
            b"mine",
            None,
            0o600,
            1000,
        )
        .file("./etc/.wh.motd", "")
        .dir("./opt/")
        .file("./opt/.wh..wh..opq", "")
        .file("./opt/fresh", "new")
        .entry("./dev/sda", tar::EntryType::Block, b"", None, 0o600, 0)
        .entry("./run/fifo", tar::EntryType::Fifo, b"", None, 0o600, 0);
    let stats = unpack(layer, dir.path()).unwrap();
    assert_eq!(
        (stats.whiteouts, stats.opaque_dirs, stats.skipped_devices),
        (1, 1, 2)
    );

    let root = dir.path();
    let tool = std::fs::metadata(root.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(
        std::fs::metadata(root.join("usr/bin/tool-again"))
            .unwrap()
            .ino(),
        tool.ino(),
        "hard link"
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/alias")).unwrap(),
        Path::new("tool")
    );
    let notes = std::fs::metadata(root.join("home/ma-user/notes.txt")).unwrap();
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o777),
        (1000, 1000, 0o600)
    );

    let whiteout = std::fs::symlink_metadata(root.join("etc/motd")).unwrap();
    assert!(
        whiteout.file_type().is_char_device(),
        "a whiteout is a 0/0 character device"
    );
    assert_eq!(whiteout.rdev(), 0);
    assert!(!root.join("etc/.wh.motd").exists());
    assert_eq!(
        xattr::get(root.join("opt"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!root.join("opt/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("opt/fresh")).unwrap(),
        "new"
    );
    assert!(
        !root.join("dev/sda").exists() && !root.join("run/fifo").exists(),
        "no device nodes"
    );
}

/// Each hostile layer fails, and nothing appears outside the layer's directory.
#[test]
fn a_hostile_layer_fails_and_writes_nothing_outside_its_directory() {
    if skip("a_hostile_layer_fails_and_writes_nothing_outside_its_directory") {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "host file").unwrap();
    let target = outside.path().display().to_string();
    let cases: Vec<(&str, Layer)> = vec![
        ("parent path", Layer::new().file("../escaped", "x")),
        (
            "deep parent path",
            Layer::new().dir("a/").file("a/../../escaped", "x"),
        ),
        (
            "a file through a symlink",
            Layer::new()
                .symlink("link", &target)
                .file("link/escaped", "x"),
        ),
        (
            "a directory through a symlink",
            Layer::new().symlink("link", &target).dir("link/sub/"),
        ),
        (
            "a whiteout through a symlink",
            Layer::new()
                .symlink("link", &target)
                .file("link/.wh.victim", ""),
        ),
        (
            "an opaque marker through a symlink",
            Layer::new()
                .symlink("link", &target)
                .file("link/.wh..wh..opq", ""),
        ),
        (
            "a whiteout of the parent",
            Layer::new().dir("a/").file("a/.wh..", ""),
        ),
        (
            "a hard link to a parent path",
            Layer::new().hardlink("stolen", &format!("../{}", "x".repeat(3))),
        ),
        (
            "a hard link to an absolute host path",
            Layer::new().hardlink("stolen", &victim.display().to_string()),
        ),
        (
            "a hard link through a symlink",
            Layer::new()
                .symlink("link", &target)
                .hardlink("stolen", "link/victim"),
        ),
    ];
    for (what, layer) in cases {
        let dst = tempfile::tempdir().unwrap();
        let result = unpack(layer, dst.path());
        assert!(result.is_err(), "{what}: unpacked: {result:?}");
        let mut names: Vec<String> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["victim"], "{what}: wrote outside");
        let victim_meta = std::fs::symlink_metadata(&victim).unwrap();
        assert!(victim_meta.is_file(), "{what}: the host file was replaced");
        assert_eq!(
            victim_meta.nlink(),
            1,
            "{what}: the host file was hard-linked"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file");
        assert!(
            xattr::get(outside.path(), "trusted.overlay.opaque")
                .unwrap()
                .is_none(),
            "{what}: marked a host directory"
        );
        assert!(
            !dst.path().parent().unwrap().join("escaped").exists(),
            "{what}: wrote beside the layer"
        );
    }
}
