//! The few system calls the local runtime needs that have no safe wrapper: what a child does
//! between `fork` and `exec` (join cgroups, take its file descriptors, drop to the notebook's
//! uid, load the seccomp filter), idmapped bind mounts, and the owner of a network namespace.
//! Every `unsafe` block of the crate is here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::libc;

/// The host uid and gid a sandbox's processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIds {
    pub uid: u32,
    pub gid: u32,
}

/// What a child process does before it executes its program, in this order: join the cgroups
/// (writing `0` to each `cgroup.procs`, which must happen while it is still root), put the
/// inherited descriptors at their numbers, drop every supplementary group and become `ids`,
/// then set `no_new_privs` and load the seccomp filters.
pub struct ChildSetup {
    pub cgroup_procs: Vec<File>,
    /// (descriptor, the number it gets in the child). At most 8.
    pub fds: Vec<(OwnedFd, RawFd)>,
    pub ids: Option<HostIds>,
    pub seccomp: Vec<seccompiler::BpfProgram>,
}

impl ChildSetup {
    /// Installs the setup on `command` (consumed when the command spawns; the parent's copies
    /// of the descriptors close when `command` is dropped).
    pub fn apply(self, command: &mut tokio::process::Command) {
        assert!(self.fds.len() <= 8, "at most 8 inherited descriptors");
        let ChildSetup {
            cgroup_procs,
            fds,
            ids,
            seccomp,
        } = self;
        let closure = move || -> io::Result<()> {
            for procs in &cgroup_procs {
                // SAFETY: writing two bytes from a static buffer to an open descriptor.
                if unsafe { libc::write(procs.as_raw_fd(), b"0\n".as_ptr().cast(), 2) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // First out of the way (a source may sit on another's target number), then into
            // place; dup2 leaves the target without close-on-exec.
            let mut moved = [-1; 8];
            for (index, (fd, _)) in fds.iter().enumerate() {
                // SAFETY: duplicating an open descriptor.
                let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
                if high < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[index] = high;
            }
            for (index, (_, target)) in fds.iter().enumerate() {
                // SAFETY: both are open descriptors of this process.
                if unsafe { libc::dup2(moved[index], *target) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(ids) = ids {
                // SAFETY: plain system calls on this (single-threaded, forked) process.
                unsafe {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(ids.gid, ids.gid, ids.gid) != 0
                        || libc::setresuid(ids.uid, ids.uid, ids.uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            if !seccomp.is_empty() {
                // SAFETY: prctl with constant arguments.
                if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                for filter in &seccomp {
                    seccompiler::apply_filter(filter).map_err(io::Error::other)?;
                }
            }
            Ok(())
        };
        // SAFETY: the closure only makes system calls (no allocation, no locks): it is safe
        // between fork and exec.
        unsafe {
            command.pre_exec(closure);
        }
    }
}

/// The user namespace that owns the network namespace `netns` (`NS_GET_USERNS`).
pub fn netns_owner(netns: &File) -> io::Result<OwnedFd> {
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: the ioctl takes no argument and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(netns.as_raw_fd(), NS_GET_USERNS as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Mounts `source` on `target` (`nosuid,nodev`) so that what belongs to `userns`'s inside ids
/// on disk shows as its outside ids, and what those outside ids write is stored as the
/// inside ids: an idmapped bind mount (Linux 5.12+; ext4, xfs, btrfs, tmpfs 6.3+).
pub fn idmapped_bind(source: &Path, target: &Path, userns: &OwnedFd) -> io::Result<()> {
    bind_with_attributes(source, target, Some(userns), false)
}

/// Mounts `source` on `target`, `nosuid,nodev`, idmapped through `userns` when given, and
/// read-only with `read_only`. The attributes are set before the mount is attached, so the
/// copies that propagate into other mount namespaces have them too (a later remount would
/// change only this namespace's).
pub fn bind_with_attributes(
    source: &Path,
    target: &Path,
    userns: Option<&OwnedFd>,
    read_only: bool,
) -> io::Result<()> {
    let source = c_path(source)?;
    let target = c_path(target)?;
    // SAFETY: open_tree with a valid C string; returns a new descriptor or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor this process owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    let mut attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if userns.is_some() {
        attr_set |= MOUNT_ATTR_IDMAP;
    }
    if read_only {
        attr_set |= MOUNT_ATTR_RDONLY;
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr on our descriptor with a properly sized struct.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: move_mount of our detached tree onto a valid C string path.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A user namespace whose only mapping is `inside → outside` (uid and gid alike), for
/// [`idmapped_bind`].
pub fn mapping_userns(inside: u32, outside: u32) -> io::Result<OwnedFd> {
    id_mapping_userns(&[(inside, outside)], &[(inside, outside)])
}

/// A user namespace with the given `(inside, outside)` uid and gid mappings (one id each),
/// for [`idmapped_bind`]: a short-lived child unshares it, the maps are written, the
/// namespace is kept open and the child is killed.
pub fn id_mapping_userns(uids: &[(u32, u32)], gids: &[(u32, u32)]) -> io::Result<OwnedFd> {
    let map = |pairs: &[(u32, u32)]| -> String {
        pairs
            .iter()
            .map(|(inside, outside)| format!("{inside} {outside} 1\n"))
            .collect()
    };
    let mut command = std::process::Command::new("/bin/sleep");
    command
        .arg("30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: unshare is a plain system call, safe between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let outcome = (|| -> io::Result<OwnedFd> {
        std::fs::write(format!("/proc/{pid}/uid_map"), map(uids))?;
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
        std::fs::write(format!("/proc/{pid}/gid_map"), map(gids))?;
        Ok(File::open(format!("/proc/{pid}/ns/user"))?.into())
    })();
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// A pidfd for `pid` (Linux 5.3+), registered with tokio: readable once the process has
/// exited, whoever its parent is.
pub fn pidfd(pid: i32) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: an OwnedFd stays open, and is the same descriptor, for as long as it is owned.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}
