//! `ControlError`: what went wrong in the control plane, said without HTTP. The server maps it
//! to `ApiError` (a status and a ModelArts code) at its edge, and only there.
use std::net::IpAddr;

use atelier_domain::{Admission, LeaseError, NotebookStatus, TransitionError};
use atelier_runtime::RuntimeError;
use atelier_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    // What the request names is not there.
    #[error("the notebook does not exist")]
    NotebookNotFound,

    // The notebook's state refuses the request.
    /// Admission refused the operation; `field` names the parameter the request changes.
    #[error("not admitted in status {status} ({admission:?}, field {field})")]
    NotAdmitted {
        admission: Admission,
        status: NotebookStatus,
        field: &'static str,
    },
    /// The state machine has no such transition from the notebook's status.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The notebook is being deleted (or is gone): nothing else may change it.
    #[error("the notebook is {0}")]
    BeingDeleted(NotebookStatus),
    /// Another writer committed first (the store's version check).
    #[error("the notebook was changed by another request")]
    ChangedConcurrently,
    /// The notebook moved on while a background task worked on it (a stop pre-empted a start):
    /// the task's work is void, and nothing is wrong.
    #[error("the notebook moved on to {0}")]
    MovedOn(NotebookStatus),

    // The request does not fit the catalogue, the quota or the notebook.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("unknown flavor {0}")]
    UnknownFlavor(String),
    #[error("flavor {0} is sold out")]
    FlavorSoldOut(String),
    #[error("flavor {flavor} does not serve feature {feature}")]
    FlavorFeatureMismatch { flavor: String, feature: String },
    #[error("unknown image {0}")]
    UnknownImage(String),
    #[error("storage {0} is not offered by the flavor")]
    UnsupportedStorage(String),
    #[error("the user already has a notebook of this feature")]
    InstanceLimit,
    #[error("unknown key pair {0}")]
    UnknownKeyPair(String),
    #[error("notebook {notebook} cannot switch to flavor {flavor}")]
    FlavorNotSwitchable { notebook: String, flavor: String },
    /// A storage change that is not a growth of an EVS volume; `field` names the parameter.
    #[error("'{0}': the storage can only grow")]
    StorageShrink(&'static str),
    #[error("EVS volumes range from {min} GB to {max} GB")]
    EvsCapacity { min: i64, max: i64 },
    /// Another image of the project has the name and tag (its `swr_path` is given).
    #[error("the image {0} already exists")]
    ImageConflict(String),
    #[error("a notebook has at most {max} tags")]
    TooManyTags { max: usize },
    #[error("the storage mount does not exist")]
    StorageNotFound,
    /// A bucket or share the notebook's project was not granted (or that does not exist:
    /// the answer is the same).
    #[error("no permission to mount {0}")]
    StorageNotGranted(String),
    #[error("{0} is already mounted")]
    MountPathInUse(String),
    #[error("a notebook has at most {max} storage mounts")]
    TooManyMounts { max: usize },
    #[error("all SSH ports {first}-{last} are taken")]
    SshPortsExhausted { first: u16, last: u16 },

    // Faults: the client is told to retry later, the log has the cause.
    #[error("this server's runtime cannot serve SSH")]
    SshUnsupported,
    #[error("cannot listen for SSH on {address}:{port}: {source}")]
    SshListen {
        address: IpAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("SSH session: {0}")]
    SshSession(#[source] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ControlError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::StaleVersion => ControlError::ChangedConcurrently,
            other => ControlError::Store(other),
        }
    }
}

impl ControlError {
    /// The admission refusal for `status`, naming `field`.
    pub fn not_admitted(
        admission: Admission,
        status: NotebookStatus,
        field: &'static str,
    ) -> ControlError {
        ControlError::NotAdmitted {
            admission,
            status,
            field,
        }
    }
}
