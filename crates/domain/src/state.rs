//! The notebook state machine (spec §3.1, §3.2). Every status change in Atelier goes through
//! [`NotebookStatus::transition`]; every user operation is admitted by [`NotebookStatus::admit`].
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotebookStatus {
    Init,
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Snapshotting,
    Deleting,
    Deleted,
    CreateFailed,
    StartFailed,
    DeleteFailed,
    Error,
    Frozen,
}

impl NotebookStatus {
    pub const ALL: [NotebookStatus; 14] = [
        NotebookStatus::Init,
        NotebookStatus::Creating,
        NotebookStatus::Starting,
        NotebookStatus::Running,
        NotebookStatus::Stopping,
        NotebookStatus::Stopped,
        NotebookStatus::Snapshotting,
        NotebookStatus::Deleting,
        NotebookStatus::Deleted,
        NotebookStatus::CreateFailed,
        NotebookStatus::StartFailed,
        NotebookStatus::DeleteFailed,
        NotebookStatus::Error,
        NotebookStatus::Frozen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotebookStatus::Init => "INIT",
            NotebookStatus::Creating => "CREATING",
            NotebookStatus::Starting => "STARTING",
            NotebookStatus::Running => "RUNNING",
            NotebookStatus::Stopping => "STOPPING",
            NotebookStatus::Stopped => "STOPPED",
            NotebookStatus::Snapshotting => "SNAPSHOTTING",
            NotebookStatus::Deleting => "DELETING",
            NotebookStatus::Deleted => "DELETED",
            NotebookStatus::CreateFailed => "CREATE_FAILED",
            NotebookStatus::StartFailed => "START_FAILED",
            NotebookStatus::DeleteFailed => "DELETE_FAILED",
            NotebookStatus::Error => "ERROR",
            NotebookStatus::Frozen => "FROZEN",
        }
    }

    /// A status in which the orchestrator owes work (an operation is in flight).
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            NotebookStatus::Init
                | NotebookStatus::Creating
                | NotebookStatus::Starting
                | NotebookStatus::Stopping
                | NotebookStatus::Deleting
                | NotebookStatus::Snapshotting
        )
    }

    /// Whether the operation may be performed in this status (spec §3.2 admission table).
    pub fn admit(self, operation: Operation) -> Result<(), Admission> {
        use NotebookStatus as S;
        if self == S::Frozen && operation.is_mutating() {
            return Err(Admission::Frozen);
        }
        let allowed = match operation {
            // ERROR (a runtime fault, e.g. the kernel killed the sandbox) can be started again:
            // a user should not have to delete a notebook to recover from an OOM kill.
            Operation::Start => matches!(self, S::Stopped | S::StartFailed | S::Error),
            Operation::Stop => matches!(self, S::Running | S::Starting | S::Error),
            // A notebook whose image is being saved finishes the save first (its sandbox is
            // the image's source).
            Operation::Delete => !matches!(self, S::Deleting | S::Deleted | S::Snapshotting),
            Operation::UpdateNameOrDescription => matches!(self, S::Running | S::Stopped),
            Operation::UpdateEndpoints => matches!(self, S::Running | S::Stopped),
            Operation::UpdateSpec => {
                if self == S::Stopped {
                    true
                } else {
                    return Err(Admission::FieldNotModifiable);
                }
            }
            Operation::UpdateStorage => matches!(self, S::Running | S::Stopped),
            Operation::RenewLease => {
                if self == S::Running {
                    true
                } else {
                    return Err(Admission::NotRunning);
                }
            }
            Operation::CreateImage | Operation::AttachStorage | Operation::DetachStorage => {
                if self == S::Running {
                    true
                } else {
                    return Err(Admission::NotRunning);
                }
            }
            Operation::ShowLease | Operation::Show => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(Admission::Conflict)
        }
    }

    /// The one place where statuses change.
    pub fn transition(self, event: Event) -> Result<NotebookStatus, TransitionError> {
        use NotebookStatus as S;
        let next = match (self, event) {
            // Re-entered when the server resumes a create interrupted by a crash.
            (S::Init | S::Creating, Event::CreateBegun) => S::Creating,
            (S::Creating, Event::ComputeReady) => S::Starting,
            (S::Init | S::Creating | S::Starting, Event::CreateFailed) => S::CreateFailed,
            (S::Stopped | S::StartFailed | S::Error, Event::StartRequested) => S::Starting,
            (S::Starting, Event::Ready) => S::Running,
            (S::Starting, Event::StartFailed) => S::StartFailed,
            (S::Running | S::Starting | S::Error, Event::StopRequested) => S::Stopping,
            // A lease expiring or an idle notebook being culled is a stop like any other.
            (S::Stopping, Event::Stopped) => S::Stopped,
            // Saving the notebook as an image, whatever the save's outcome.
            (S::Running, Event::SnapshotRequested) => S::Snapshotting,
            (S::Snapshotting, Event::SnapshotEnded) => S::Running,
            // A sandbox that dies, or a stop the runtime cannot carry out.
            (S::Running | S::Starting | S::Stopping | S::Snapshotting, Event::Fault) => S::Error,
            (from, Event::DeleteRequested) if !matches!(from, S::Deleting | S::Deleted) => {
                S::Deleting
            }
            (S::Deleting, Event::Deleted) => S::Deleted,
            (S::Deleting, Event::DeleteFailed) => S::DeleteFailed,
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(next)
    }
}

impl fmt::Display for NotebookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotebookStatus {
    type Err = UnknownStatus;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NotebookStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
            .ok_or(UnknownStatus)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown notebook status")]
pub struct UnknownStatus;

/// What happened to a notebook; input of [`NotebookStatus::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    CreateBegun,
    ComputeReady,
    CreateFailed,
    StartRequested,
    Ready,
    StartFailed,
    StopRequested,
    Stopped,
    SnapshotRequested,
    SnapshotEnded,
    Fault,
    DeleteRequested,
    Deleted,
    DeleteFailed,
}

impl Event {
    pub const ALL: [Event; 14] = [
        Event::CreateBegun,
        Event::ComputeReady,
        Event::CreateFailed,
        Event::StartRequested,
        Event::Ready,
        Event::StartFailed,
        Event::StopRequested,
        Event::Stopped,
        Event::SnapshotRequested,
        Event::SnapshotEnded,
        Event::Fault,
        Event::DeleteRequested,
        Event::Deleted,
        Event::DeleteFailed,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no transition from {from} on {event:?}")]
pub struct TransitionError {
    pub from: NotebookStatus,
    pub event: Event,
}

/// A user-facing operation, for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Start,
    Stop,
    Delete,
    UpdateNameOrDescription,
    UpdateEndpoints,
    /// flavor, image, hooks and the other fields that need a stopped notebook
    UpdateSpec,
    UpdateStorage,
    RenewLease,
    /// Save the notebook as an image (create-image).
    CreateImage,
    /// Mount an object-store prefix or a share under `/data/` (dynamic storage).
    AttachStorage,
    DetachStorage,
    ShowLease,
    Show,
}

impl Operation {
    pub fn is_mutating(self) -> bool {
        !matches!(self, Operation::Show | Operation::ShowLease)
    }
}

/// Why an operation was refused in the current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// another operation runs, or the notebook is already where the operation would take it
    Conflict,
    /// the operation needs a RUNNING notebook
    NotRunning,
    /// the field cannot be changed in this status
    FieldNotModifiable,
    Frozen,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn start_is_admitted_only_from_stopped_or_failed() {
        for status in NotebookStatus::ALL {
            let admitted = status.admit(Operation::Start).is_ok();
            let expected = matches!(
                status,
                NotebookStatus::Stopped | NotebookStatus::StartFailed | NotebookStatus::Error
            );
            assert_eq!(admitted, expected, "{status}");
        }
    }

    #[test]
    fn stop_on_stopped_is_a_conflict() {
        assert_eq!(
            NotebookStatus::Stopped.admit(Operation::Stop),
            Err(Admission::Conflict)
        );
    }

    #[test]
    fn saving_an_image_needs_a_running_notebook_and_blocks_the_others() {
        for status in NotebookStatus::ALL {
            let expected = if status == NotebookStatus::Running {
                Ok(())
            } else if status == NotebookStatus::Frozen {
                Err(Admission::Frozen)
            } else {
                Err(Admission::NotRunning)
            };
            assert_eq!(status.admit(Operation::CreateImage), expected, "{status}");
        }
        for operation in [Operation::Start, Operation::Stop, Operation::Delete] {
            assert_eq!(
                NotebookStatus::Snapshotting.admit(operation),
                Err(Admission::Conflict),
                "{operation:?}"
            );
        }
        let saving = NotebookStatus::Running
            .transition(Event::SnapshotRequested)
            .unwrap();
        assert_eq!(saving, NotebookStatus::Snapshotting);
        assert_eq!(
            saving.transition(Event::SnapshotEnded),
            Ok(NotebookStatus::Running)
        );
        assert_eq!(saving.transition(Event::Fault), Ok(NotebookStatus::Error));
    }

    #[test]
    fn frozen_refuses_every_mutation() {
        assert_eq!(
            NotebookStatus::Frozen.admit(Operation::Delete),
            Err(Admission::Frozen)
        );
        assert!(NotebookStatus::Frozen.admit(Operation::Show).is_ok());
    }

    #[test]
    fn status_names_round_trip_case_insensitively() {
        for status in NotebookStatus::ALL {
            assert_eq!(status.as_str().parse::<NotebookStatus>(), Ok(status));
            assert_eq!(
                status.as_str().to_lowercase().parse::<NotebookStatus>(),
                Ok(status)
            );
        }
    }

    fn any_status() -> impl Strategy<Value = NotebookStatus> {
        prop::sample::select(NotebookStatus::ALL.to_vec())
    }
    fn any_event() -> impl Strategy<Value = Event> {
        prop::sample::select(Event::ALL.to_vec())
    }

    proptest! {
        /// Walking random events from a new notebook never reaches a state from which
        /// delete is impossible, and DELETED is terminal.
        #[test]
        fn random_walks_respect_the_state_machine(events in prop::collection::vec(any_event(), 0..40)) {
            let mut status = NotebookStatus::Init;
            for event in events {
                if let Ok(next) = status.transition(event) {
                    prop_assert_ne!(status, NotebookStatus::Deleted, "DELETED is terminal");
                    status = next;
                }
                if status != NotebookStatus::Deleted && status != NotebookStatus::Deleting {
                    prop_assert!(status.transition(Event::DeleteRequested).is_ok());
                }
            }
        }

        /// An admitted start, stop or delete always has a matching transition.
        #[test]
        fn admission_implies_transition(status in any_status()) {
            if status.admit(Operation::Start).is_ok() {
                prop_assert_eq!(status.transition(Event::StartRequested), Ok(NotebookStatus::Starting));
            }
            if status.admit(Operation::Stop).is_ok() {
                prop_assert_eq!(status.transition(Event::StopRequested), Ok(NotebookStatus::Stopping));
            }
            if status.admit(Operation::Delete).is_ok() {
                prop_assert_eq!(status.transition(Event::DeleteRequested), Ok(NotebookStatus::Deleting));
            }
            if status.admit(Operation::CreateImage).is_ok() {
                prop_assert_eq!(status.transition(Event::SnapshotRequested), Ok(NotebookStatus::Snapshotting));
            }
        }

        /// Completion events only apply to the matching in-flight status.
        #[test]
        fn completions_need_their_operation(status in any_status()) {
            if status.transition(Event::Ready).is_ok() {
                prop_assert_eq!(status, NotebookStatus::Starting);
            }
            if status.transition(Event::Stopped).is_ok() {
                prop_assert_eq!(status, NotebookStatus::Stopping);
            }
            if status.transition(Event::Deleted).is_ok() {
                prop_assert_eq!(status, NotebookStatus::Deleting);
            }
        }
    }
}
