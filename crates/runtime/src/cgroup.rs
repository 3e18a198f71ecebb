//! Resource limits per sandbox through cgroups, v1 (this CI machine) or v2 (current hosts).
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use atelier_domain::NotebookId;

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "atelier";
/// How long pausing a sandbox may take: a process in uninterruptible sleep (disk I/O on a
/// busy host) stops only once its system call returns; a second was seen to be too short
/// with CI's tests all writing at once.
const FREEZE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    V1,
    V2,
}

/// The flavor's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub pids_max: u64,
}

/// One notebook's cgroup(s).
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    /// v1: one directory per controller (memory, cpu, pids); v2: one directory.
    dirs: Vec<PathBuf>,
}

/// Whether a process is stopped (or gone, or a zombie: it runs no more either).
fn is_stopped(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    matches!(state, Some("T" | "t" | "Z" | "X") | None)
}

pub fn detect() -> Option<Hierarchy> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Some(Hierarchy::V2)
    } else if Path::new(ROOT).join("memory/cgroup.procs").exists() {
        Some(Hierarchy::V1)
    } else {
        None
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroup {
    pub fn for_notebook(hierarchy: Hierarchy, id: NotebookId) -> Cgroup {
        Cgroup::named(hierarchy, &id.to_string())
    }

    /// The cgroup(s) called `name` under Atelier's parent (a notebook id, or a warm sandbox).
    pub fn named(hierarchy: Hierarchy, name: &str) -> Cgroup {
        let dirs = match hierarchy {
            Hierarchy::V1 => ["memory", "cpu", "pids"]
                .iter()
                .map(|controller| Path::new(ROOT).join(controller).join(PARENT).join(name))
                .collect(),
            Hierarchy::V2 => vec![Path::new(ROOT).join(PARENT).join(name)],
        };
        Cgroup { hierarchy, dirs }
    }

    /// Renames the cgroup(s), processes and limits included (a warm sandbox becoming a
    /// notebook's).
    pub fn rename(&self, name: &str) -> io::Result<Cgroup> {
        let renamed = Cgroup::named(self.hierarchy, name);
        for (from, to) in self.dirs.iter().zip(&renamed.dirs) {
            fs::rename(from, to)?;
        }
        Ok(renamed)
    }

    /// Creates the cgroup(s) and applies the limits. Idempotent.
    pub fn create(&self, limits: Limits) -> io::Result<()> {
        if self.hierarchy == Hierarchy::V2 {
            let parent = Path::new(ROOT).join(PARENT);
            fs::create_dir_all(&parent)?;
            // Controllers must be enabled from the root down to our parent.
            let _ = write(
                &Path::new(ROOT).join("cgroup.subtree_control"),
                "+memory +cpu +pids",
            );
            write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
        }
        for dir in &self.dirs {
            fs::create_dir_all(dir)?;
        }
        let memory = limits.memory_mib * 1024 * 1024;
        let quota = u64::from(limits.vcpus.max(1)) * 100_000;
        match self.hierarchy {
            Hierarchy::V1 => {
                let (memory_dir, cpu_dir, pids_dir) = (&self.dirs[0], &self.dirs[1], &self.dirs[2]);
                write(
                    &memory_dir.join("memory.limit_in_bytes"),
                    &memory.to_string(),
                )?;
                let memsw = memory_dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &memory.to_string())?;
                }
                write(&cpu_dir.join("cpu.cfs_period_us"), "100000")?;
                write(&cpu_dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(&pids_dir.join("pids.max"), &limits.pids_max.to_string())?;
            }
            Hierarchy::V2 => {
                let dir = &self.dirs[0];
                write(&dir.join("memory.max"), &memory.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&dir.join("cpu.max"), &format!("{quota} 100000"))?;
                write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process must write its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Every process in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.last() else {
            return vec![];
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// How many times the kernel's OOM killer has killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.hierarchy {
            Hierarchy::V1 => self.dirs[0].join("memory.oom_control"),
            Hierarchy::V2 => self.dirs[0].join("memory.events"),
        };
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Pauses (or resumes) every process of the cgroup. v2: its freezer, waiting for the
    /// kernel to say it is frozen. v1 (no freezer controller here): SIGSTOP to every member
    /// until a pass finds all of them stopped (a process forked meanwhile is caught by the
    /// next pass), SIGCONT to resume. Fails if they cannot all be paused within
    /// [`FREEZE_WAIT`].
    pub fn freeze(&self, frozen: bool) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + FREEZE_WAIT;
        if self.hierarchy == Hierarchy::V1 {
            use nix::sys::signal::{Signal, kill};
            let signal = if frozen {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            loop {
                let mut running = false;
                for pid in self.pids() {
                    let _ = kill(nix::unistd::Pid::from_raw(pid), signal);
                    running |= frozen && !is_stopped(pid);
                }
                if !running {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "the sandbox's processes did not stop within {} s",
                        FREEZE_WAIT.as_secs()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let dir = &self.dirs[0];
        write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        while tokio::time::Instant::now() < deadline {
            if fs::read_to_string(dir.join("cgroup.events"))?
                .lines()
                .any(|line| line == want)
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if frozen {
            return Err(io::Error::other(format!(
                "the sandbox did not freeze within {} s",
                FREEZE_WAIT.as_secs()
            )));
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        self.dirs.iter().all(|dir| dir.exists())
    }

    /// Removes the (empty) cgroup(s). Idempotent.
    pub fn remove(&self) -> io::Result<()> {
        for dir in &self.dirs {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Names of the notebooks that have a cgroup (to find orphans after a crash).
    pub fn existing(hierarchy: Hierarchy) -> Vec<String> {
        let dir = match hierarchy {
            Hierarchy::V1 => Path::new(ROOT).join("pids").join(PARENT),
            Hierarchy::V2 => Path::new(ROOT).join(PARENT),
        };
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}
