//! Auto-stop. One queue of deadlines (earliest first), rebuilt from the notebooks at boot and
//! updated whenever a notebook changes; one task sleeps until the earliest and stops what is due.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use atelier_domain::{LeaseType, Notebook, NotebookId, NotebookStatus, StopReason};

use crate::activity::Activity;
use crate::clock::Clock;
use crate::gateway::NotebookGateway;
use crate::metrics::ControlMetrics;
use crate::orchestrator::Orchestrator;
use crate::service::NotebookService;

#[derive(Default)]
struct Queue {
    by_deadline: BTreeSet<(i64, NotebookId)>,
    deadline_of: HashMap<NotebookId, i64>,
}

impl Queue {
    fn set(&mut self, id: NotebookId, deadline: Option<i64>) -> bool {
        if let Some(old) = self.deadline_of.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
        let Some(deadline) = deadline else {
            return false;
        };
        let earliest = self
            .by_deadline
            .first()
            .is_none_or(|(first, _)| deadline < *first);
        self.by_deadline.insert((deadline, id));
        self.deadline_of.insert(id, deadline);
        earliest
    }

    fn pop_due(&mut self, now: i64) -> Vec<NotebookId> {
        let mut due = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            self.deadline_of.remove(&id);
            due.push(id);
        }
        due
    }
}

pub struct LeaseKeeper {
    clock: Arc<dyn Clock>,
    queue: Mutex<Queue>,
    /// Recorded activity (kernels, terminals, SSH) and open SSH sessions per notebook.
    activity: Arc<Activity>,
    /// The gateway's record of HTTP and WebSocket traffic per notebook.
    gateway: Option<Arc<dyn NotebookGateway>>,
    metrics: ControlMetrics,
    wake: Notify,
}

impl LeaseKeeper {
    pub fn new(
        clock: Arc<dyn Clock>,
        gateway: Option<Arc<dyn NotebookGateway>>,
        activity: Arc<Activity>,
        metrics: ControlMetrics,
    ) -> Arc<LeaseKeeper> {
        Arc::new(LeaseKeeper {
            clock,
            queue: Mutex::new(Queue::default()),
            activity,
            gateway,
            metrics,
            wake: Notify::new(),
        })
    }

    fn deadline(&self, notebook: &Notebook) -> Option<i64> {
        if notebook.status != NotebookStatus::Running || !notebook.lease.enable {
            return None;
        }
        match notebook.lease.kind {
            LeaseType::Timing => notebook.lease.timing_deadline(),
            LeaseType::Idle => {
                let recorded = self.activity.last(&notebook.id);
                let proxied = self
                    .gateway
                    .as_ref()
                    .and_then(|gateway| gateway.last_activity(&notebook.id));
                let last = recorded.max(proxied).unwrap_or(notebook.lease.update_at);
                notebook.lease.idle_deadline(last)
            }
        }
    }

    /// Called after every committed change of a notebook.
    pub fn observe(&self, notebook: &Notebook) {
        let deadline = self.deadline(notebook);
        if notebook.status == NotebookStatus::Deleted {
            self.activity.forget(&notebook.id);
        }
        let earliest = self
            .queue
            .lock()
            .expect("poisoned")
            .set(notebook.id, deadline);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// The number of armed deadlines (metrics, tests).
    pub fn armed(&self) -> usize {
        self.queue.lock().expect("poisoned").by_deadline.len()
    }

    pub async fn run(
        self: Arc<Self>,
        service: Arc<NotebookService>,
        orchestrator: Arc<Orchestrator>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = self
                .queue
                .lock()
                .expect("poisoned")
                .by_deadline
                .first()
                .map(|(d, _)| *d);
            let wake = self.wake.notified();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake => continue,
                () = async {
                    match next {
                        Some(deadline) => self.clock.sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let now = self.clock.now_ms();
            let due = self.queue.lock().expect("poisoned").pop_due(now);
            for id in due {
                let Some(notebook) = service.get_any(&id) else {
                    continue;
                };
                // A busy kernel, an open terminal or an SSH session is activity, though
                // nothing crosses the gateway: never cull work in progress.
                if notebook.lease.kind == LeaseType::Idle {
                    let busy = self.activity.ssh_sessions(&id) > 0
                        || match &self.gateway {
                            Some(gateway) => gateway.jupyter_busy(&id).await,
                            None => false,
                        };
                    if busy {
                        self.activity.record(id, now);
                    }
                }
                // Activity may have moved an IDLE deadline since it was queued.
                let deadline = match self.deadline(&notebook) {
                    Some(deadline) if deadline <= now => deadline,
                    other => {
                        self.queue.lock().expect("poisoned").set(id, other);
                        continue;
                    }
                };
                let reason = match notebook.lease.kind {
                    LeaseType::Timing => StopReason::LeaseExpired,
                    LeaseType::Idle => StopReason::Idle,
                };
                tracing::info!(notebook_id = %id, reason = %reason, late_ms = now - deadline, "auto-stop");
                match orchestrator.request_stop(&id, reason).await {
                    Ok(_) => self.metrics.lease_expiry(reason.as_str()),
                    Err(error) => tracing::warn!(notebook_id = %id, %error, "auto-stop refused"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_orders_and_replaces_deadlines() {
        let mut queue = Queue::default();
        let a = NotebookId::new_random();
        let b = NotebookId::new_random();
        assert!(queue.set(a, Some(100)));
        assert!(queue.set(b, Some(50)));
        assert!(!queue.set(a, Some(200)));
        assert_eq!(queue.pop_due(60), vec![b]);
        assert_eq!(queue.pop_due(199), Vec::<NotebookId>::new());
        queue.set(a, None);
        assert_eq!(queue.pop_due(1000), Vec::<NotebookId>::new());
    }
}
