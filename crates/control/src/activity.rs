//! Activity for IDLE leases: when each notebook was last used (as recorded here; the gateway
//! keeps its own record of proxied traffic) and how many SSH sessions it has open. The SSH
//! service writes it, the lease keeper and the metrics read it.
use std::collections::HashMap;
use std::sync::Mutex;

use atelier_domain::NotebookId;

#[derive(Default)]
pub struct Activity {
    /// Last recorded activity per notebook, epoch ms.
    last: Mutex<HashMap<NotebookId, i64>>,
    /// Open SSH sessions per notebook.
    ssh_sessions: Mutex<HashMap<NotebookId, usize>>,
}

impl Activity {
    /// Records activity at `at_ms`.
    pub fn record(&self, id: NotebookId, at_ms: i64) {
        self.last.lock().expect("poisoned").insert(id, at_ms);
    }

    /// The last recorded activity, epoch ms.
    pub fn last(&self, id: &NotebookId) -> Option<i64> {
        self.last.lock().expect("poisoned").get(id).copied()
    }

    /// Forgets a deleted notebook.
    pub fn forget(&self, id: &NotebookId) {
        self.last.lock().expect("poisoned").remove(id);
    }

    /// Open SSH sessions of the notebook.
    pub fn ssh_sessions(&self, id: &NotebookId) -> usize {
        self.ssh_sessions
            .lock()
            .expect("poisoned")
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// Open SSH sessions of all notebooks.
    pub fn ssh_sessions_total(&self) -> usize {
        self.ssh_sessions.lock().expect("poisoned").values().sum()
    }

    /// A session opened (`delta` 1) or ended (-1).
    pub(crate) fn add_ssh_sessions(&self, id: NotebookId, delta: isize) {
        let mut open = self.ssh_sessions.lock().expect("poisoned");
        let count = open.entry(id).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            open.remove(&id);
        }
    }
}
