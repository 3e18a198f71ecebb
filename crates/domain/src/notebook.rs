//! The notebook record as the control plane keeps it.
use std::fmt;
use std::str::FromStr;

use crate::{
    DataVolume, EpochMillis, ImageId, Lease, NotebookId, NotebookStatus, ProjectId, UserId,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Notebook {
    pub id: NotebookId,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub user_name: String,
    pub name: String,
    pub description: String,
    pub feature: Feature,
    pub flavor: String,
    pub image_id: ImageId,
    pub status: NotebookStatus,
    pub fail_reason: Option<String>,
    pub workspace_id: String,
    pub pool_id: Option<String>,
    pub volume: Volume,
    pub endpoints: Vec<EndpointSpec>,
    /// The `hooks` object exactly as the user sent it (JSON text); run by the runtime.
    pub hooks_json: Option<String>,
    pub tags: Vec<Tag>,
    /// Dynamic storage mounted under `/data/` (re-mounted at every start).
    pub data_volumes: Vec<DataVolume>,
    pub lease: Lease,
    /// The Jupyter access token; a new one on every start.
    pub token: Option<String>,
    /// Empty until a create or start begins; then always the four steps.
    pub action_progress: Vec<StepProgress>,
    pub stop_reason: Option<StopReason>,
    /// Set once the notebook has been running: `url` stays visible afterwards.
    pub has_run: bool,
    /// The number of the notebook's last event (see [`crate::events`]).
    pub event_seq: i64,
    pub create_at: EpochMillis,
    pub update_at: EpochMillis,
    /// Optimistic concurrency: the store refuses an update written against an older version.
    pub version: i64,
}

impl Notebook {
    pub fn reset_progress(&mut self) {
        self.action_progress = (1..=4)
            .map(|step| StepProgress {
                step,
                status: StepStatus::Waiting,
                detail: None,
            })
            .collect();
    }

    /// Moves a step to `status`. Its detail goes, except when it fails: then it tells how
    /// far the step got.
    pub fn set_step(&mut self, step: u8, status: StepStatus) {
        if self.action_progress.len() != 4 {
            self.reset_progress();
        }
        if let Some(progress) = self.action_progress.iter_mut().find(|p| p.step == step) {
            progress.status = status;
            if status != StepStatus::Failed {
                progress.detail = None;
            }
        }
    }

    /// Says what a PROCESSING step is doing now; a step in any other status keeps what it
    /// has. Returns whether anything changed.
    pub fn set_step_detail(&mut self, step: u8, detail: &str) -> bool {
        match self
            .action_progress
            .iter_mut()
            .find(|p| p.step == step && p.status == StepStatus::Processing)
        {
            Some(progress) if progress.detail.as_deref() != Some(detail) => {
                progress.detail = Some(detail.to_owned());
                true
            }
            _ => false,
        }
    }

    /// The step currently being worked on, or the first not yet completed.
    pub fn current_step(&self) -> Option<u8> {
        self.action_progress
            .iter()
            .find(|p| p.status != StepStatus::Completed)
            .map(|p| p.step)
    }

    pub fn ssh_endpoint(&self) -> Option<&EndpointSpec> {
        self.endpoints
            .iter()
            .find(|e| e.service == EndpointService::Ssh)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepProgress {
    pub step: u8,
    pub status: StepStatus,
    /// What the step is doing now, for people watching ("Pulling the image: 12.3 of 65.0
    /// MiB."): set while the step is PROCESSING, gone once it completes, kept if it fails.
    pub detail: Option<String>,
}

impl StepProgress {
    /// The step's text on the wire: its description, then its detail if it has one.
    pub fn description(&self) -> String {
        let plain = step_description(self.step);
        match &self.detail {
            Some(detail) => format!("{plain} {detail}"),
            None => plain.to_owned(),
        }
    }
}

pub fn step_description(step: u8) -> &'static str {
    match step {
        1 => "Prepare the storage.",
        2 => "Prepare the compute resource.",
        3 => "Configuring the network.",
        _ => "Initialize the notebook instance.",
    }
}

macro_rules! wire_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Case-insensitive, as ModelArts accepts lower-case enum values.
        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $(if text.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                Err(UnknownValue)
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown value")]
pub struct UnknownValue;

wire_enum!(StepStatus {
    Waiting => "WAITING",
    Processing => "PROCESSING",
    Failed => "FAILED",
    Completed => "COMPLETED",
});

wire_enum!(Feature { Notebook => "NOTEBOOK", Default => "DEFAULT" });

wire_enum!(VolumeCategory { Efs => "EFS", Evs => "EVS", Sfs => "SFS" });

wire_enum!(VolumeOwnership { Managed => "MANAGED", Dedicated => "DEDICATED" });

wire_enum!(EndpointService { Notebook => "NOTEBOOK", Ssh => "SSH" });

wire_enum!(StopReason {
    User => "user",
    LeaseExpired => "lease_expired",
    Idle => "idle",
    Fault => "fault",
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub category: VolumeCategory,
    pub ownership: VolumeOwnership,
    pub capacity_gb: i64,
    pub uri: Option<String>,
    pub id: Option<String>,
}

impl Volume {
    pub const EVS_MIN_GB: i64 = 5;
    pub const EVS_MAX_GB: i64 = 4096;
    pub const EVS_DEFAULT_GB: i64 = 5;
    pub const EFS_GB: i64 = 50;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub service: EndpointService,
    pub key_pair_names: Vec<String>,
    pub allowed_access_ips: Vec<String>,
    /// The notebook's SSH port, held from create (or the update adding the endpoint) to delete.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub key: String,
    pub value: String,
}
