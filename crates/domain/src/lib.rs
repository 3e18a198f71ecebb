//! Atelier's domain: identifiers, the notebook state machine, lease arithmetic and the
//! catalogues of flavors and images. No IO, no async, no serde: every other crate builds on it.
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod events;
pub mod hooks;
pub mod id;
pub mod identity;
pub mod keypair;
pub mod lease;
pub mod notebook;
pub mod state;
pub mod storage;
pub mod upstream;

pub use catalogue::{BUILTIN_JUPYTERLAB_IMAGE_ID, Flavor, FlavorCategory, Image, ImageType};
pub use events::{EventLevel, NotebookEvent};
pub use hooks::{ContainerHooks, Hook, HookMode, HookPoint, HookScript};
pub use id::{AccessKeyId, ImageId, InvalidId, NotebookId, ProjectId, UserId};
pub use identity::{AccessToken, Credential, Project, User};
pub use keypair::KeyPair;
pub use lease::{Lease, LeaseError, LeaseRun, LeaseType};
pub use notebook::{
    EndpointService, EndpointSpec, Feature, Notebook, StepProgress, StepStatus, StopReason, Tag,
    UnknownValue, Volume, VolumeCategory, VolumeOwnership, step_description,
};
pub use state::{Admission, Event, NotebookStatus, Operation, TransitionError};
pub use storage::{DataVolume, MountStatus, StorageCategory};
pub use upstream::Upstream;

/// Milliseconds since the Unix epoch, UTC: the only time unit on the ModelArts wire.
pub type EpochMillis = i64;
