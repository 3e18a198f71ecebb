//! What happened to a notebook, derived from each committed change: step transitions and
//! status changes, named like Kubernetes/ModelArts events (`Scheduled`, `PulledImage`,
//! `NotebookHealthy`, `StopNotebookResourceIdle`, …). Numbered per notebook (1, 2, 3, …) and
//! stored in the same transaction as the change, so a reader resuming after event `n` misses
//! nothing and sees nothing twice.
use crate::{EpochMillis, LeaseType, Notebook, NotebookId, NotebookStatus, StepStatus, StopReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLevel {
    Normal,
    Warning,
}

impl EventLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            EventLevel::Normal => "Normal",
            EventLevel::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotebookEvent {
    pub notebook_id: NotebookId,
    /// 1, 2, 3, … per notebook.
    pub seq: i64,
    pub at: EpochMillis,
    pub level: EventLevel,
    pub reason: String,
    pub message: String,
    /// The notebook's status after the change.
    pub status: NotebookStatus,
    /// Set for step transitions.
    pub step: Option<u8>,
    pub step_status: Option<StepStatus>,
}

impl NotebookEvent {
    /// A status change into a status that is not an operation in progress: a progress
    /// stream ends with one of these.
    pub fn is_terminal(&self) -> bool {
        self.step.is_none()
            && !self.status.is_transitional()
            && !HOOK_REASONS.contains(&self.reason.as_str())
    }

    /// The first event of an operation (create, start, stop, delete).
    pub fn begins_operation(&self) -> bool {
        self.step.is_none()
            && (matches!(
                self.reason.as_str(),
                "Created" | "StartRequested" | "DeleteRequested" | "SavingImage"
            ) || self.status == NotebookStatus::Stopping)
    }
}

/// The reasons of the events a custom hook's run makes: they tell what a hook did (a
/// post-start hook in the background may still run after its start has ended) and never end
/// an operation.
pub const HOOK_REASONS: [&str; 4] = ["HookStarted", "HookOutput", "HookSucceeded", "HookFailed"];

/// An event before it is numbered and timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    pub level: EventLevel,
    pub reason: &'static str,
    pub message: String,
    pub step: Option<u8>,
    pub step_status: Option<StepStatus>,
}

fn normal(reason: &'static str, message: String) -> EventDraft {
    EventDraft {
        level: EventLevel::Normal,
        reason,
        message,
        step: None,
        step_status: None,
    }
}

fn warning(reason: &'static str, message: String) -> EventDraft {
    EventDraft {
        level: EventLevel::Warning,
        ..normal(reason, message)
    }
}

fn step_event(step: u8, status: StepStatus, notebook: &Notebook) -> Option<EventDraft> {
    let name = match step {
        1 => "storage",
        2 => "compute (image)",
        3 => "network",
        _ => "JupyterLab",
    };
    let (level, reason, message) = match (status, step) {
        (StepStatus::Processing, 1) => (
            EventLevel::Normal,
            "PreparingStorage",
            format!(
                "step 1/4: preparing the {} work volume",
                notebook.volume.category
            ),
        ),
        (StepStatus::Processing, 2) => (
            EventLevel::Normal,
            "PullingImage",
            "step 2/4: preparing the image and the compute resource".to_owned(),
        ),
        (StepStatus::Processing, 3) => (
            EventLevel::Normal,
            "ConfiguringNetwork",
            "step 3/4: configuring the network".to_owned(),
        ),
        (StepStatus::Processing, _) => (
            EventLevel::Normal,
            "StartingNotebook",
            "step 4/4: starting JupyterLab".to_owned(),
        ),
        (StepStatus::Completed, 1) => (
            EventLevel::Normal,
            "StorageReady",
            "step 1/4 done: the work volume is ready".to_owned(),
        ),
        (StepStatus::Completed, 2) => (
            EventLevel::Normal,
            "PulledImage",
            "step 2/4 done: the image is ready".to_owned(),
        ),
        (StepStatus::Completed, 3) => (
            EventLevel::Normal,
            "NetworkReady",
            "step 3/4 done: the network is configured".to_owned(),
        ),
        (StepStatus::Completed, _) => (
            EventLevel::Normal,
            "NotebookHealthy",
            "step 4/4 done: JupyterLab answers".to_owned(),
        ),
        (StepStatus::Failed, _) => (
            EventLevel::Warning,
            "StepFailed",
            format!(
                "step {step}/4 ({name}) failed{}",
                notebook
                    .fail_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
        (StepStatus::Waiting, _) => return None,
    };
    Some(EventDraft {
        level,
        reason,
        message,
        step: Some(step),
        step_status: Some(status),
    })
}

fn lease_text(notebook: &Notebook) -> String {
    if !notebook.lease.enable {
        return "no auto-stop".to_owned();
    }
    let minutes = notebook.lease.duration / 60_000;
    let span = if minutes % 60 == 0 {
        format!("{} h", minutes / 60)
    } else {
        format!("{minutes} min")
    };
    match notebook.lease.kind {
        LeaseType::Timing => format!("auto-stop after {span}"),
        LeaseType::Idle => format!("auto-stop after {span} without activity"),
    }
}

fn status_event(before: Option<NotebookStatus>, after: &Notebook) -> EventDraft {
    use NotebookStatus as S;
    let reason_text = || after.fail_reason.clone().unwrap_or_default();
    match after.status {
        S::Init => normal(
            "Created",
            format!("notebook {} created ({})", after.name, after.flavor),
        ),
        S::Creating => normal("Scheduled", "scheduled; preparing the notebook".to_owned()),
        S::Starting if before == Some(S::Creating) => {
            normal("Starting", "the notebook is starting".to_owned())
        }
        S::Starting => normal(
            "StartRequested",
            format!("start requested ({})", lease_text(after)),
        ),
        S::Running if before == Some(S::Snapshotting) => normal(
            "ImageSaveEnded",
            "the image save ended (the image's status tells how); the notebook is running"
                .to_owned(),
        ),
        S::Running => normal("Running", "the notebook is running".to_owned()),
        S::Snapshotting => normal("SavingImage", "saving the notebook as an image".to_owned()),
        S::Stopping => match after.stop_reason {
            Some(StopReason::LeaseExpired) => normal(
                "StopNotebookLeaseExpired",
                "stopping: the lease expired".to_owned(),
            ),
            Some(StopReason::Idle) => normal(
                "StopNotebookResourceIdle",
                format!(
                    "stopping: no activity for {} min",
                    after.lease.duration / 60_000
                ),
            ),
            Some(StopReason::Fault) => {
                warning("StopNotebookFault", "stopping after a fault".to_owned())
            }
            _ => normal("StopRequested", "stop requested".to_owned()),
        },
        S::Stopped => normal(
            "Stopped",
            "the notebook stopped; the work volume is kept".to_owned(),
        ),
        S::StartFailed => warning("StartFailed", reason_text()),
        S::CreateFailed => warning("CreateFailed", reason_text()),
        S::Error => warning("NotebookFault", reason_text()),
        S::Deleting => normal("DeleteRequested", "delete requested".to_owned()),
        S::DeleteFailed => warning("DeleteFailed", reason_text()),
        S::Deleted => normal(
            "Deleted",
            "the notebook and its volume are deleted".to_owned(),
        ),
        other => normal("StatusChanged", format!("status {other}")),
    }
}

/// The events a change from `before` (none: a create) to `after` makes: a status change into
/// an operation before its steps, a status an operation ends in after them.
pub fn derive(before: Option<&Notebook>, after: &Notebook) -> Vec<EventDraft> {
    let mut drafts = Vec::new();
    let status_before = before.map(|b| b.status);
    let status_changed = status_before != Some(after.status);
    if status_changed && after.status.is_transitional() {
        drafts.push(status_event(status_before, after));
    }
    // Steps cut short by a stop or delete are not failures of their own.
    let cut_short = matches!(
        after.status,
        NotebookStatus::Stopping | NotebookStatus::Deleting
    );
    if !cut_short {
        for progress in &after.action_progress {
            let was = before.and_then(|b| {
                b.action_progress
                    .iter()
                    .find(|p| p.step == progress.step)
                    .map(|p| p.status)
            });
            if was != Some(progress.status)
                && let Some(draft) = step_event(progress.step, progress.status, after)
            {
                drafts.push(draft);
            }
        }
    }
    if status_changed && !after.status.is_transitional() {
        drafts.push(status_event(status_before, after));
    }
    drafts
}

/// Numbers and times drafts after the notebook's last event; returns them and the new last.
pub fn number(
    notebook_id: NotebookId,
    last_seq: i64,
    at: EpochMillis,
    status: NotebookStatus,
    drafts: Vec<EventDraft>,
) -> (Vec<NotebookEvent>, i64) {
    let mut seq = last_seq;
    let events = drafts
        .into_iter()
        .map(|d| {
            seq += 1;
            NotebookEvent {
                notebook_id,
                seq,
                at,
                level: d.level,
                reason: d.reason.to_owned(),
                message: d.message,
                status,
                step: d.step,
                step_status: d.step_status,
            }
        })
        .collect();
    (events, seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Feature, ImageId, Lease, LeaseRun, ProjectId, UserId, Volume, VolumeCategory};

    fn notebook() -> Notebook {
        let mut nb = Notebook {
            id: NotebookId::new_random(),
            project_id: ProjectId::new_random(),
            user_id: UserId::new_random(),
            user_name: "u".to_owned(),
            name: "nb".to_owned(),
            description: String::new(),
            feature: Feature::Notebook,
            flavor: "f".to_owned(),
            image_id: ImageId::new_random(),
            status: NotebookStatus::Stopped,
            fail_reason: None,
            workspace_id: "0".to_owned(),
            pool_id: None,
            volume: Volume {
                category: VolumeCategory::Efs,
                ownership: crate::VolumeOwnership::Managed,
                capacity_gb: 50,
                uri: None,
                id: None,
            },
            endpoints: vec![],
            hooks_json: None,
            tags: vec![],
            data_volumes: vec![],
            lease: Lease::new(0, LeaseRun::default_timing()),
            token: None,
            action_progress: vec![],
            stop_reason: None,
            has_run: true,
            event_seq: 0,
            create_at: 0,
            update_at: 0,
            version: 1,
        };
        nb.reset_progress();
        nb
    }

    fn reasons(drafts: &[EventDraft]) -> Vec<&str> {
        drafts.iter().map(|d| d.reason).collect()
    }

    #[test]
    fn a_failed_step_comes_before_the_failed_status() {
        let before = notebook();
        let mut starting = before.clone();
        starting.status = NotebookStatus::Starting;
        assert_eq!(
            reasons(&derive(Some(&before), &starting)),
            ["StartRequested"]
        );
        let mut failed = starting.clone();
        failed.set_step(2, StepStatus::Failed);
        failed.status = NotebookStatus::StartFailed;
        failed.fail_reason = Some("no image".to_owned());
        let drafts = derive(Some(&starting), &failed);
        assert_eq!(reasons(&drafts), ["StepFailed", "StartFailed"]);
        assert_eq!(drafts[0].level, EventLevel::Warning);
        assert!(drafts[0].message.contains("no image"), "{drafts:?}");
    }

    #[test]
    fn an_idle_stop_says_so_and_cut_short_steps_are_quiet() {
        let mut running = notebook();
        running.status = NotebookStatus::Running;
        let mut stopping = running.clone();
        stopping.status = NotebookStatus::Stopping;
        stopping.stop_reason = Some(StopReason::Idle);
        stopping.set_step(4, StepStatus::Failed);
        let drafts = derive(Some(&running), &stopping);
        assert_eq!(reasons(&drafts), ["StopNotebookResourceIdle"]);
    }

    #[test]
    fn an_image_save_begins_and_ends_an_operation() {
        let mut running = notebook();
        running.status = NotebookStatus::Running;
        let mut saving = running.clone();
        saving.status = NotebookStatus::Snapshotting;
        let (begun, _) = number(
            saving.id,
            0,
            1,
            saving.status,
            derive(Some(&running), &saving),
        );
        assert_eq!(begun[0].reason, "SavingImage");
        assert!(begun[0].begins_operation() && !begun[0].is_terminal());
        let (ended, _) = number(
            running.id,
            1,
            2,
            running.status,
            derive(Some(&saving), &running),
        );
        assert_eq!(ended[0].reason, "ImageSaveEnded");
        assert!(ended[0].is_terminal());
    }

    #[test]
    fn numbering_continues_from_the_last_event() {
        let before = notebook();
        let mut next = before.clone();
        next.status = NotebookStatus::Starting;
        next.set_step(1, StepStatus::Processing);
        let (events, last) = number(next.id, 7, 42, next.status, derive(Some(&before), &next));
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9]);
        assert_eq!(last, 9);
        // The operation's first event comes before its steps.
        assert!(events[0].begins_operation() && !events[0].is_terminal());
        assert_eq!(events[1].step, Some(1));
    }

    #[test]
    fn a_step_detail_shows_while_the_step_runs_and_makes_no_event() {
        let mut starting = notebook();
        starting.status = NotebookStatus::Starting;
        // Only a PROCESSING step takes a detail.
        assert!(!starting.set_step_detail(2, "Pulling the image: 1.0 of 2.0 MiB."));
        starting.set_step(2, StepStatus::Processing);
        let mut pulling = starting.clone();
        assert!(pulling.set_step_detail(2, "Pulling the image: 1.0 of 2.0 MiB."));
        assert!(!pulling.set_step_detail(2, "Pulling the image: 1.0 of 2.0 MiB."));
        assert_eq!(
            pulling.action_progress[1].description(),
            "Prepare the compute resource. Pulling the image: 1.0 of 2.0 MiB."
        );
        assert!(derive(Some(&starting), &pulling).is_empty());
        let mut failed = pulling.clone();
        failed.set_step(2, StepStatus::Failed);
        assert_eq!(
            failed.action_progress[1].description(),
            pulling.action_progress[1].description(),
            "a failed step keeps how far it got"
        );
        pulling.set_step(2, StepStatus::Completed);
        assert_eq!(
            pulling.action_progress[1].description(),
            "Prepare the compute resource."
        );
    }
}
