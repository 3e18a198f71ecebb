//! `ApiError`: the only type that knows HTTP statuses and ModelArts error codes.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use atelier_control::ControlError;
use atelier_domain::{Admission, LeaseError};
use atelier_runtime::RuntimeError;
use atelier_store::StoreError;
use atelier_wire::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // 401 / 403
    #[error("Incorrect IAM authentication information: {0}")]
    Unauthenticated(&'static str),
    #[error("The project id in the request URL does not match the token.")]
    ProjectMismatch,

    // 400: request shape
    #[error("Invalid request payload {0}, please check.")]
    MalformedJson(String),
    #[error("Incorrect parameter type. The '{field}' parameter must be of the '{expected}' type.")]
    WrongType { field: String, expected: String },
    #[error("'{0}' is a required property.")]
    MissingField(String),
    #[error("'{0}' property value is incorrect.")]
    BadValue(String),
    #[error("Invalid value for name or description. The character `{0}` is not allowed.")]
    BadCharacter(String),
    #[error("Invalid Argument: {0}")]
    InvalidArgument(String),
    #[error("The field does not support sorting: {0}.")]
    UnsortableField(String),

    // 400: domain rules
    #[error("The param 'storage' is needed for creating notebook instance.")]
    MissingVolume,
    #[error("This location type is not supported: {0}.")]
    UnsupportedStorage(String),
    #[error("The evs volume size ranges from {min} GB to {max} GB.")]
    EvsCapacity { min: i64, max: i64 },
    #[error("The flavor is not supported, please check it: {0}.")]
    UnknownFlavor(String),
    #[error("The specified flavor {0} is already sold out.")]
    FlavorSoldOut(String),
    #[error("Specified flavor {flavor} does not support current instance feature {feature}.")]
    FlavorFeatureMismatch { flavor: String, feature: String },
    #[error("Specified image {0} cannot be found.")]
    UnknownImage(String),
    #[error("The image cannot be used: {0}.")]
    ImageNotRegistrable(String),
    #[error("image too large to register: {size} bytes, at most {limit} allowed")]
    ImageTooLarge { size: u64, limit: u64 },
    #[error("The image registry cannot be reached: {0}. Try again later.")]
    RegistryUnavailable(String),
    #[error("The instance count already reaches the maximum value.")]
    InstanceLimit,
    #[error("The 'duration' parameter is incorrect. The value ranges from {min} to {max}.")]
    LeaseOutOfRange { min: i64, max: i64 },
    #[error(
        "The operation is not allowed because another operation is being performed on the instance or the instance is in the target state ({0})."
    )]
    StateConflict(String),
    #[error("The instance is not in running. Please refresh the page and start it.")]
    NotRunning,
    #[error(
        "When the instance is in the '{status}' status, the '{field}' parameter cannot be modified."
    )]
    FieldNotModifiable { status: String, field: String },
    #[error("Instance {notebook} does not support to update flavor to {flavor}.")]
    FlavorNotSwitchable { notebook: String, flavor: String },
    #[error("workspace:{0} not existed")]
    WorkspaceNotFound(String),
    #[error("You are not authorized to perform the ({0}) operation.")]
    NotAuthorized(&'static str),
    #[error("Conflict tag {0}, the image is already registered.")]
    ImageConflict(String),
    #[error("The instance is frozen.")]
    Frozen,
    #[error("no permission to use SSH key pair {0}")]
    UnknownKeyPair(String),
    #[error("'public_key' property value is incorrect: {0}")]
    BadPublicKey(String),
    #[error("The key pair {0} already exists.")]
    KeyPairExists(String),
    #[error("insufficient background resources: {0}")]
    Exhausted(String),
    #[error("The storage can only grow: '{0}' property value is incorrect.")]
    StorageShrink(String),
    #[error("The param 'path' needs to end with /.")]
    ObsPathNoSlash,
    #[error("OBS path cannot be the bucket root")]
    ObsBucketRoot,
    #[error("'mount_path' property value is incorrect: {0}")]
    MountRefused(String),
    #[error("no permission to mount {0}")]
    StorageNotGranted(String),

    // not found
    #[error("The instance does not exist.")]
    NotebookNotFound,
    #[error("The {0} does not exist.")]
    ResourceNotFound(&'static str),
    #[error("The feature {0} does not exist; the only feature is NOTEBOOK.")]
    FeatureNotFound(String),
    #[error("The requested URL was not found on this server.")]
    RouteNotFound,
    #[error("The method is not allowed for the requested URL.")]
    MethodNotAllowed,
    #[error("The request body is too large.")]
    PayloadTooLarge,

    // 500
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError as E;
        match self {
            E::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            E::ProjectMismatch | E::NotAuthorized(_) | E::StorageNotGranted(_) => {
                StatusCode::FORBIDDEN
            }
            E::NotebookNotFound
            | E::ResourceNotFound(_)
            | E::FeatureNotFound(_)
            | E::RouteNotFound => StatusCode::NOT_FOUND,
            E::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            E::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::RegistryUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn error_code(&self) -> &'static str {
        use ApiError as E;
        match self {
            E::Unauthenticated(_) => "APIG.0301",
            E::ProjectMismatch => "ModelArts.0210",
            E::MalformedJson(_) => "ModelArts.6400",
            E::WrongType { .. } => "ModelArts.6332",
            E::MissingField(_) => "ModelArts.6335",
            E::BadValue(_) | E::StorageShrink(_) | E::MountRefused(_) => "ModelArts.6336",
            E::ObsPathNoSlash => "ModelArts.6318",
            E::ObsBucketRoot => "ModelArts.6358",
            E::StorageNotGranted(_) => "ModelArts.6407",
            E::BadCharacter(_) => "ModelArts.6334",
            E::InvalidArgument(_) => "ModelArts.0101",
            E::UnsortableField(_) => "ModelArts.6303",
            E::MissingVolume => "ModelArts.6316",
            E::UnsupportedStorage(_) => "ModelArts.6324",
            E::EvsCapacity { .. } => "ModelArts.6331",
            E::UnknownFlavor(_) => "ModelArts.6323",
            E::FlavorSoldOut(_) => "ModelArts.6716",
            E::FlavorFeatureMismatch { .. } => "ModelArts.6870",
            E::UnknownImage(_) | E::ImageNotRegistrable(_) => "ModelArts.6797",
            E::ImageTooLarge { .. } => "ModelArts.6771",
            E::RegistryUnavailable(_) => "ModelArts.0010",
            E::InstanceLimit => "ModelArts.6302",
            E::LeaseOutOfRange { .. } => "ModelArts.6349",
            E::StateConflict(_) => "ModelArts.6357",
            E::NotRunning => "ModelArts.6327",
            E::FieldNotModifiable { .. } => "ModelArts.6347",
            E::Frozen => "ModelArts.6326",
            E::FlavorNotSwitchable { .. } => "ModelArts.6792",
            E::WorkspaceNotFound(_) => "ModelArts.7005",
            E::NotAuthorized(_) => "ModelArts.0108",
            E::ImageConflict(_) => "ModelArts.6737",
            E::UnknownKeyPair(_) => "ModelArts.6789",
            E::BadPublicKey(_) => "ModelArts.6336",
            E::KeyPairExists(_) => "ModelArts.6301",
            E::Exhausted(_) => "ModelArts.6360",
            E::NotebookNotFound => "ModelArts.6309",
            E::ResourceNotFound(_) | E::FeatureNotFound(_) | E::RouteNotFound => "ModelArts.6404",
            E::MethodNotAllowed => "ModelArts.0101",
            E::PayloadTooLarge => "ModelArts.6400",
            E::Internal(_) => "ModelArts.0010",
        }
    }

    /// Maps a refused admission to its error; `field` names the parameter for 6347.
    pub fn from_admission(admission: Admission, status: &str, field: &str) -> ApiError {
        match admission {
            Admission::Conflict => ApiError::StateConflict(status.to_owned()),
            Admission::NotRunning => ApiError::NotRunning,
            Admission::FieldNotModifiable => ApiError::FieldNotModifiable {
                status: status.to_owned(),
                field: field.to_owned(),
            },
            Admission::Frozen => ApiError::Frozen,
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(error))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::StaleVersion => {
                ApiError::StateConflict("changed by another request".to_owned())
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<LeaseError> for ApiError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::OutOfRange { min, max } => ApiError::LeaseOutOfRange { min, max },
            LeaseError::UnknownType => ApiError::BadValue("type".to_owned()),
        }
    }
}

/// The HTTP edge of the control plane: each condition keeps the status and ModelArts code it
/// has always had.
impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        use ControlError as C;
        match error {
            C::NotebookNotFound => ApiError::NotebookNotFound,
            C::NotAdmitted {
                admission,
                status,
                field,
            } => ApiError::from_admission(admission, status.as_str(), field),
            C::Transition(refused) => ApiError::StateConflict(refused.from.as_str().to_owned()),
            C::BeingDeleted(status) | C::MovedOn(status) => {
                ApiError::StateConflict(status.as_str().to_owned())
            }
            C::ChangedConcurrently => {
                ApiError::StateConflict("changed by another request".to_owned())
            }
            C::Lease(error) => ApiError::from(error),
            C::UnknownFlavor(flavor) => ApiError::UnknownFlavor(flavor),
            C::FlavorSoldOut(flavor) => ApiError::FlavorSoldOut(flavor),
            C::FlavorFeatureMismatch { flavor, feature } => {
                ApiError::FlavorFeatureMismatch { flavor, feature }
            }
            C::UnknownImage(image) => ApiError::UnknownImage(image),
            C::UnsupportedStorage(category) => ApiError::UnsupportedStorage(category),
            C::InstanceLimit => ApiError::InstanceLimit,
            C::UnknownKeyPair(name) => ApiError::UnknownKeyPair(name),
            C::FlavorNotSwitchable { notebook, flavor } => {
                ApiError::FlavorNotSwitchable { notebook, flavor }
            }
            C::StorageShrink(field) => ApiError::StorageShrink(field.to_owned()),
            C::EvsCapacity { min, max } => ApiError::EvsCapacity { min, max },
            C::TooManyTags { .. } => ApiError::BadValue("tags".to_owned()),
            C::ImageConflict(swr_path) => ApiError::ImageConflict(swr_path),
            C::StorageNotFound => ApiError::ResourceNotFound("storage mount"),
            C::StorageNotGranted(what) => ApiError::StorageNotGranted(what),
            refused @ (C::MountPathInUse(_) | C::TooManyMounts { .. }) => {
                ApiError::MountRefused(refused.to_string())
            }
            exhausted @ C::SshPortsExhausted { .. } => ApiError::Exhausted(exhausted.to_string()),
            C::Runtime(RuntimeError::Capacity(what)) => ApiError::Exhausted(what),
            C::Runtime(RuntimeError::Image(what)) => ApiError::UnknownImage(what),
            C::Runtime(RuntimeError::Unsupported(what)) => ApiError::InvalidArgument(what),
            fault @ (C::SshUnsupported
            | C::SshListen { .. }
            | C::SshSession(_)
            | C::Runtime(_)
            | C::Store(_)) => ApiError::internal(fault),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error_msg = match &self {
            ApiError::Internal(cause) => {
                // The cause stays in the log (with the request id span); the client gets none.
                tracing::error!(error = %cause, "internal error");
                "Internal error, please retry later.".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error_code: self.error_code().to_owned(),
            error_msg,
        };
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_errors_map_to_modelarts_codes_by_kind() {
        let code = |error: RuntimeError| ApiError::from(ControlError::Runtime(error)).error_code();
        assert_eq!(
            code(RuntimeError::Capacity("full".into())),
            "ModelArts.6360"
        );
        assert_eq!(code(RuntimeError::Image("gone".into())), "ModelArts.6797");
        assert_eq!(
            code(RuntimeError::Unsupported("no".into())),
            "ModelArts.0101"
        );
        for fault in [
            RuntimeError::Transient("later".into()),
            RuntimeError::Fatal("broken".into()),
            RuntimeError::Aborted,
        ] {
            assert_eq!(code(fault), "ModelArts.0010");
        }
    }

    use super::*;

    /// Every variant with its status and code, in one table.
    #[test]
    fn variant_status_code_table() {
        let table: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::Unauthenticated("x"), 401, "APIG.0301"),
            (ApiError::ProjectMismatch, 403, "ModelArts.0210"),
            (ApiError::MalformedJson("x".into()), 400, "ModelArts.6400"),
            (
                ApiError::WrongType {
                    field: "a".into(),
                    expected: "int".into(),
                },
                400,
                "ModelArts.6332",
            ),
            (ApiError::MissingField("a".into()), 400, "ModelArts.6335"),
            (ApiError::BadValue("a".into()), 400, "ModelArts.6336"),
            (ApiError::BadCharacter("<".into()), 400, "ModelArts.6334"),
            (ApiError::UnsortableField("a".into()), 400, "ModelArts.6303"),
            (ApiError::MissingVolume, 400, "ModelArts.6316"),
            (
                ApiError::EvsCapacity { min: 5, max: 4096 },
                400,
                "ModelArts.6331",
            ),
            (ApiError::UnknownFlavor("f".into()), 400, "ModelArts.6323"),
            (ApiError::UnknownImage("i".into()), 400, "ModelArts.6797"),
            (
                ApiError::ImageNotRegistrable("i".into()),
                400,
                "ModelArts.6797",
            ),
            (
                ApiError::ImageTooLarge { size: 2, limit: 1 },
                400,
                "ModelArts.6771",
            ),
            (
                ApiError::RegistryUnavailable("r".into()),
                503,
                "ModelArts.0010",
            ),
            (
                ApiError::LeaseOutOfRange { min: 1, max: 2 },
                400,
                "ModelArts.6349",
            ),
            (
                ApiError::StateConflict("RUNNING".into()),
                400,
                "ModelArts.6357",
            ),
            (ApiError::NotRunning, 400, "ModelArts.6327"),
            (
                ApiError::FieldNotModifiable {
                    status: "RUNNING".into(),
                    field: "flavor".into(),
                },
                400,
                "ModelArts.6347",
            ),
            (ApiError::UnknownKeyPair("kp".into()), 400, "ModelArts.6789"),
            (ApiError::BadPublicKey("x".into()), 400, "ModelArts.6336"),
            (ApiError::KeyPairExists("kp".into()), 400, "ModelArts.6301"),
            (ApiError::Exhausted("ports".into()), 400, "ModelArts.6360"),
            (ApiError::NotebookNotFound, 404, "ModelArts.6309"),
            (ApiError::ResourceNotFound("image"), 404, "ModelArts.6404"),
            (ApiError::FeatureNotFound("X".into()), 404, "ModelArts.6404"),
            (ApiError::Internal("boom".into()), 500, "ModelArts.0010"),
        ];
        for (error, status, code) in table {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.error_code(), code, "{error:?}");
        }
    }
}
