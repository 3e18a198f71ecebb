//! Host uids for sandboxes. Every notebook owns one uid of a range Atelier manages, for as
//! long as it exists: its processes run as it and its volume's files belong to it. A warm
//! sandbox, started before anyone knows which notebook it will serve, gets a uid of its own
//! for its lifetime; the notebook that claims it sees its volume through an idmapped mount.
//!
//! Claims are files in a registry shared by every Atelier on the host (`{uid}`, created with
//! `O_EXCL`, holding `DATA_DIR\nOWNER`), so that two data dirs never hand out the same uid.
//! A data dir remembers its notebooks' uids in `DATA/uids/{notebook_id}` (root only). A claim
//! whose data dir is gone is free again: nothing on disk can belong to it any more.
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use atelier_domain::NotebookId;

use super::sys::HostIds;

/// The range and where claims live.
#[derive(Debug, Clone)]
pub struct UidRange {
    pub first: u32,
    pub count: u32,
    pub registry: PathBuf,
}

pub struct Uids {
    range: UidRange,
    /// `DATA/uids`: notebook id → uid.
    local: PathBuf,
    data_dir: PathBuf,
    /// Next offset to try.
    cursor: Mutex<u32>,
    cache: Mutex<HashMap<NotebookId, u32>>,
}

impl Uids {
    pub fn open(range: UidRange, data_dir: &Path) -> io::Result<Uids> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(&range.registry)?;
        fs::set_permissions(&range.registry, fs::Permissions::from_mode(0o700))?;
        let local = data_dir.join("uids");
        fs::create_dir_all(&local)?;
        fs::set_permissions(&local, fs::Permissions::from_mode(0o700))?;
        Ok(Uids {
            range,
            local,
            data_dir: data_dir.to_owned(),
            cursor: Mutex::new(0),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn range(&self) -> &UidRange {
        &self.range
    }

    /// The notebook's uid, claimed at its first start.
    pub fn for_notebook(&self, id: NotebookId) -> io::Result<HostIds> {
        if let Some(uid) = self.cache.lock().expect("poisoned").get(&id) {
            return Ok(ids(*uid));
        }
        let record = self.local.join(id.to_string());
        let uid = match fs::read_to_string(&record) {
            Ok(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|uid| self.contains(*uid))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a uid of the range", record.display()),
                    )
                })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let uid = self.claim(&id.to_string())?;
                super::write_atomically(&record, uid.to_string().as_bytes())?;
                uid
            }
            Err(error) => return Err(error),
        };
        self.cache.lock().expect("poisoned").insert(id, uid);
        Ok(ids(uid))
    }

    /// The notebook's uid if it has one.
    pub fn of_notebook(&self, id: NotebookId) -> Option<HostIds> {
        if let Some(uid) = self.cache.lock().expect("poisoned").get(&id) {
            return Some(ids(*uid));
        }
        let uid: u32 = fs::read_to_string(self.local.join(id.to_string()))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        self.contains(uid).then(|| ids(uid))
    }

    /// A uid for a warm sandbox, until [`Uids::release`].
    pub fn for_slot(&self, slot: &str) -> io::Result<HostIds> {
        Ok(ids(self.claim(slot)?))
    }

    /// Gives a notebook's uid back (the notebook is deleted with its files).
    pub fn release_notebook(&self, id: NotebookId) {
        let record = self.local.join(id.to_string());
        if let Some(HostIds { uid, .. }) = self.of_notebook(id) {
            self.release(uid);
        }
        let _ = fs::remove_file(record);
        self.cache.lock().expect("poisoned").remove(&id);
    }

    /// Gives `uid` back if this data dir holds it.
    pub fn release(&self, uid: u32) {
        let claim = self.range.registry.join(uid.to_string());
        if self
            .holder(&claim)
            .is_some_and(|(dir, _)| dir == self.data_dir)
        {
            let _ = fs::remove_file(claim);
        }
    }

    /// Gives `uid` back if this data dir holds it for `owner` (a warm sandbox's slot).
    pub fn release_held_by(&self, uid: u32, owner: &str) {
        let claim = self.range.registry.join(uid.to_string());
        if self
            .holder(&claim)
            .is_some_and(|(dir, held_by)| dir == self.data_dir && held_by == owner)
        {
            let _ = fs::remove_file(claim);
        }
    }

    /// Gives back the uid `owner` (a warm sandbox's slot) holds, looking through the whole
    /// registry (when the uid itself is not known).
    pub fn release_owner(&self, owner: &str) {
        let Ok(entries) = fs::read_dir(&self.range.registry) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some((dir, held_by)) = self.holder(&entry.path())
                && dir == self.data_dir
                && held_by == owner
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Releases every warm-sandbox uid this data dir holds but those of `claimed` slots
    /// (boot: unclaimed warm sandboxes are gone; claimed ones run their notebooks).
    pub fn release_slots_except(&self, claimed: &[String]) {
        let Ok(entries) = fs::read_dir(&self.range.registry) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some((dir, owner)) = self.holder(&entry.path())
                && dir == self.data_dir
                && owner.starts_with("pool-")
                && !claimed.contains(&owner)
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn contains(&self, uid: u32) -> bool {
        uid >= self.range.first && uid - self.range.first < self.range.count
    }

    fn holder(&self, claim: &Path) -> Option<(PathBuf, String)> {
        let text = fs::read_to_string(claim).ok()?;
        let (dir, owner) = text.split_once('\n')?;
        Some((PathBuf::from(dir), owner.trim().to_owned()))
    }

    /// Claims the next free uid for `owner`. Serialised across processes by a lock file.
    fn claim(&self, owner: &str) -> io::Result<u32> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.range.registry.join(".lock"))?;
        lock.lock()?;
        let mut cursor = self.cursor.lock().expect("poisoned");
        for step in 0..self.range.count {
            let offset = (*cursor + step) % self.range.count;
            let uid = self.range.first + offset;
            let claim = self.range.registry.join(uid.to_string());
            if claim.exists() {
                // Free again only if the data dir that held it is gone.
                match self.holder(&claim) {
                    Some((dir, _)) if !dir.exists() => {
                        fs::remove_file(&claim)?;
                    }
                    _ => continue,
                }
            }
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)?;
            write!(file, "{}\n{owner}\n", self.data_dir.display())?;
            file.sync_all()?;
            *cursor = offset + 1;
            return Ok(uid);
        }
        // QuotaExceeded: the runtime reports it as a capacity fault.
        Err(io::Error::new(
            io::ErrorKind::QuotaExceeded,
            format!(
                "all {} uids of the range from {} are in use",
                self.range.count, self.range.first
            ),
        ))
    }
}

fn ids(uid: u32) -> HostIds {
    HostIds { uid, gid: uid }
}

/// Why the range cannot be used on this host: it overlaps an account or a subordinate range.
pub fn check_range(range: &UidRange) -> Result<(), String> {
    let last = u64::from(range.first) + u64::from(range.count);
    if range.first < 65_536 || last > u64::from(u32::MAX - 1) {
        return Err(format!(
            "runtime.uid_first {} with runtime.uid_count {} leaves the usable uids (65536 to 4294967294)",
            range.first, range.count
        ));
    }
    let overlaps = |start: u64, end: u64| start < last && u64::from(range.first) < end;
    for line in fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
    {
        if let Some(uid) = line.split(':').nth(2).and_then(|u| u.parse::<u64>().ok())
            && overlaps(uid, uid + 1)
        {
            return Err(format!(
                "the notebook uid range {}..{last} holds the host account `{}`; set runtime.uid_first",
                range.first,
                line.split(':').next().unwrap_or("?")
            ));
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        for line in fs::read_to_string(file).unwrap_or_default().lines() {
            let mut fields = line.split(':').skip(1);
            if let (Some(start), Some(count)) = (
                fields.next().and_then(|s| s.parse::<u64>().ok()),
                fields.next().and_then(|c| c.parse::<u64>().ok()),
            ) && overlaps(start, start + count)
            {
                return Err(format!(
                    "the notebook uid range {}..{last} overlaps `{line}` in {file}; set runtime.uid_first",
                    range.first
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uids(registry: &Path, data: &Path) -> Uids {
        Uids::open(
            UidRange {
                first: 3_000_000_000,
                count: 3,
                registry: registry.to_owned(),
            },
            data,
        )
        .unwrap()
    }

    #[test]
    fn notebooks_and_slots_never_share_a_uid_across_data_dirs() {
        let root = tempfile::tempdir().unwrap();
        let registry = root.path().join("registry");
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        let (one, two) = (uids(&registry, &a), uids(&registry, &b));
        let first = NotebookId::new_random();
        let x = one.for_notebook(first).unwrap();
        assert_eq!(one.for_notebook(first).unwrap(), x, "stable");
        let y = two.for_notebook(NotebookId::new_random()).unwrap();
        let z = one.for_slot("pool-1-1").unwrap();
        let mut all = [x.uid, y.uid, z.uid];
        all.sort();
        all.iter().for_each(|u| assert!(*u >= 3_000_000_000));
        assert!(all.windows(2).all(|w| w[0] != w[1]), "{all:?}");
        // A slot's uid is given back only by its own slot.
        one.release_held_by(z.uid, "pool-9-9");
        assert!(two.for_slot("pool-3-3").is_err(), "still held");
        // The range is full (a capacity fault, not a broken registry); a freed slot uid is
        // reused.
        let full = two.for_slot("pool-2-2").unwrap_err();
        assert_eq!(full.kind(), std::io::ErrorKind::QuotaExceeded, "{full}");
        one.release_slots_except(&[]);
        assert_eq!(two.for_slot("pool-2-2").unwrap(), z);
        // A data dir that is gone gives its uids back.
        std::fs::remove_dir_all(&a).unwrap();
        let again = uids(&registry, &root.path().join("c"));
        assert!(again.for_notebook(NotebookId::new_random()).is_ok());
        // The record survives a reopen.
        let reopened = uids(&registry, &b);
        assert_eq!(reopened.of_notebook(NotebookId::new_random()), None);
    }

    #[test]
    fn a_range_over_host_accounts_is_refused() {
        let range = |first| UidRange {
            first,
            count: 10,
            registry: PathBuf::new(),
        };
        assert!(check_range(&range(0)).is_err(), "root's uid");
        assert!(check_range(&range(u32::MAX - 5)).is_err());
        assert!(check_range(&range(2_000_000_000)).is_ok());
    }
}
