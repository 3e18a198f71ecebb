//! Request extractors that turn bad input into ModelArts errors instead of axum's plain text.
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Absent or empty bodies count as `{}`. Malformed JSON → 6400, a wrong type →
/// 6332, a missing field → 6335; unknown fields are ignored.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| ApiError::MalformedJson(format!("({e})")))?;
    if !value.is_object() {
        return Err(ApiError::MalformedJson(
            "(the body must be a JSON object)".to_owned(),
        ));
    }
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&value, &mut track);
    T::deserialize(deserializer).map_err(|error| {
        let path = track.path().to_string();
        classify_serde_error(&error.to_string(), &path)
    })
}

fn classify_serde_error(message: &str, path: &str) -> ApiError {
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let full = if path.is_empty() || path == "." {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return ApiError::MissingField(full);
    }
    let expected = message
        .split("expected ")
        .nth(1)
        .map(|e| e.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| "valid".to_owned());
    ApiError::WrongType {
        field: path.to_owned(),
        expected,
    }
}

/// The query string as decoded pairs; never rejects. Handlers parse each value.
pub struct ApiQuery(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Ok(ApiQuery(pairs))
    }
}

impl ApiQuery {
    /// A parameter, with empty strings treated as absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.text(name)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| ApiError::WrongType {
                    field: name.to_owned(),
                    expected: "integer".to_owned(),
                })
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.text(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::WrongType {
                    field: name.to_owned(),
                    expected: "boolean".to_owned(),
                }),
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_wire::NotebookCreateRequest;

    #[test]
    fn malformed_json_is_6400() {
        let error = parse_json::<NotebookCreateRequest>(b"{\"name\":").unwrap_err();
        assert_eq!(error.error_code(), "ModelArts.6400");
    }

    #[test]
    fn wrong_type_is_6332_with_the_field_path() {
        let body = br#"{"name":"a","image_id":"x","volume":{"category":"EVS","capacity":"big"}}"#;
        let error = parse_json::<NotebookCreateRequest>(body).unwrap_err();
        assert_eq!(error.error_code(), "ModelArts.6332");
        assert!(error.to_string().contains("volume.capacity"), "{error}");
    }

    #[test]
    fn missing_field_is_6335() {
        let error =
            parse_json::<NotebookCreateRequest>(br#"{"name":"a","volume":{"category":"EVS"}}"#)
                .unwrap_err();
        assert_eq!(error.error_code(), "ModelArts.6335");
        assert!(error.to_string().contains("image_id"), "{error}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_empty_body_is_an_object() {
        let parsed =
            parse_json::<atelier_wire::LeaseReq>(br#"{"surprise":1,"duration":5}"#).unwrap();
        assert_eq!(parsed.duration, Some(5));
        assert!(parse_json::<atelier_wire::LeaseReq>(b"").is_ok());
    }
}
