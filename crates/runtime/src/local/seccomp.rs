//! The default seccomp filter of every sandbox process (JupyterLab, kernels, terminals, SSH
//! sessions), in the spirit of Docker's default profile: everything is allowed except what an
//! unprivileged notebook never needs and what widens the kernel surface it can reach.
//!
//! - `EPERM` for: new namespaces (`unshare`, `clone` with a `CLONE_NEW*` flag), mounts
//!   (old and new mount API, `pivot_root`, `chroot` is harmless and kept), keyrings
//!   (`keyctl`, `add_key`, `request_key`: not namespaced), `bpf`, `perf_event_open`,
//!   `userfaultfd`, kernel modules and `kexec`, `reboot`, swap, `acct`, clock and time
//!   setting, `quotactl`, `lookup_dcookie`, handle-based opens (`open_by_handle_at` walks
//!   out of any bind mount), `io_uring_*`, `ptrace` of other processes is left to the
//!   kernel's own checks (the pid namespace hides everyone else), `personality` changes
//!   other than the standard ones, `syslog`, `vhangup`, `nfsservctl`, `uselib`, `ustat`,
//!   `sysfs`, `_sysctl`, `iopl`/`ioperm`. (`setns` stays: without a capability in
//!   the target's namespace it fails anyway, and SSH sessions enter the sandbox with it.)
//! - `ENOSYS` for `clone3`, whose flags live in memory a filter cannot read, so that glibc
//!   falls back to `clone`, which is filtered;
//! - `ENOSYS` for every x32 system call (numbers with bit 30 set), which would otherwise
//!   bypass the filter by number.
use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Namespace flags of `clone` and `unshare`.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
];

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e:?}"))
}

/// Syscalls refused whatever their arguments.
fn denied() -> Vec<i64> {
    let mut calls = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_quotactl,
        libc::SYS_lookup_dcookie,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_syslog,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_ustat,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
        libc::SYS_nfsservctl,
    ]);
    calls
}

fn flag_rules(arg: u8) -> Result<Vec<SeccompRule>, String> {
    NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )
            .and_then(|condition| SeccompRule::new(vec![condition]))
            .map_err(|e| format!("seccomp: {e:?}"))
        })
        .collect()
}

/// The filters, in the order they are loaded.
pub fn filters() -> Result<Vec<BpfProgram>, String> {
    let arch = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied()
        .into_iter()
        .map(|call| (call, Vec::new()))
        .collect();
    rules.insert(libc::SYS_unshare, flag_rules(0)?);
    // x86_64: clone(flags, stack, parent_tid, child_tid, tls); aarch64 has flags first too.
    rules.insert(libc::SYS_clone, flag_rules(0)?);
    // personality: only the default domain and the flags `setarch -R` and friends use.
    let personality = [0u64, 0x0008, 0x0020000, 0xffff_ffff]
        .iter()
        .map(|allowed| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *allowed)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(SeccompRule::new)
        .map_err(|e| format!("seccomp: {e:?}"))?;
    rules.insert(libc::SYS_personality, vec![personality]);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("seccomp: {e:?}"))?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("seccomp: {e:?}"))?;
    let mut programs = vec![deny, clone3];
    if cfg!(target_arch = "x86_64") {
        programs.push(no_x32());
    }
    Ok(programs)
}

/// `ENOSYS` for system call numbers with the x32 bit set; seccompiler matches by number
/// only, so this one is written out.
fn no_x32() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let instruction = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.nr is at offset 0.
        instruction(LD_W_ABS, 0, 0, 0),
        instruction(JGE_K, 0, 1, X32_SYSCALL_BIT),
        instruction(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        instruction(RET_K, 0, 0, RET_ALLOW),
    ]
}

/// The filters as bubblewrap reads them from `--add-seccomp-fd` (raw `sock_filter`s).
pub fn as_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let programs = filters().expect("filters");
        assert!(programs.len() >= 2);
        for program in &programs {
            assert_eq!(as_bytes(program).len(), program.len() * 8);
            assert!(program.len() < 4096, "within the kernel's limit");
        }
    }
}
