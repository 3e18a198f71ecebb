//! A typed client of Atelier's API: the ModelArts notebook operations and Atelier's extensions
//! (key pairs, events, the progress stream), signed with AK/SK (SDK-HMAC-SHA256) the way the
//! Huawei Cloud SDKs sign. The `atelier` CLI is built on it.
#![forbid(unsafe_code)]

pub mod profile;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use atelier_wire::{
    FlavorList, ImageList, KeypairList, KeypairResponse, LeaseResp, NotebookEventList,
    NotebookEventResp, NotebookList, NotebookResp,
};

pub use profile::Profile;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a ModelArts error body.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach {endpoint}: {cause}")]
    Unreachable { endpoint: String, cause: String },
    #[error("unexpected answer: {0}")]
    Protocol(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
}

/// Query values are percent-encoded like the SDKs do (RFC 3986 unreserved kept).
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY).to_string()
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    profile: Profile,
}

impl Client {
    pub fn new(profile: Profile) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client { http, profile })
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn project_path(&self, rest: &str) -> String {
        format!("/v1/{}{rest}", self.profile.project_id)
    }

    /// A signed request; `path_and_query` starts with `/`.
    fn signed(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let url = format!("{}{path_and_query}", self.profile.endpoint);
        let uri: http::Uri = url
            .parse()
            .map_err(|_| ClientError::Config(format!("bad endpoint URL {url}")))?;
        let host = uri
            .authority()
            .ok_or_else(|| ClientError::Config(format!("the endpoint {url} has no host")))?
            .to_string();
        let date = atelier_auth::format_sdk_date(jiff::Timestamp::now());
        let mut headers = http::HeaderMap::new();
        let header = |v: &str| {
            v.parse::<http::HeaderValue>()
                .map_err(|_| ClientError::Config(format!("bad header value {v}")))
        };
        headers.insert("host", header(&host)?);
        headers.insert("x-sdk-date", header(&date)?);
        headers.insert("content-type", header("application/json")?);
        let request = atelier_auth::SignableRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query(),
            headers: &headers,
            body: &body,
        };
        let authorization = atelier_auth::sign(
            &request,
            &self.profile.access_key,
            self.profile.secret_key.as_bytes(),
            &["content-type", "host", "x-sdk-date"],
        )
        .map_err(|e| ClientError::Config(format!("cannot sign: {e}")))?;
        headers.insert("authorization", header(&authorization)?);
        headers.remove("host");
        Ok(self.http.request(method, url).headers(headers).body(body))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let response = self
            .signed(method, path_and_query, bytes)?
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        check(response).await
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.profile.endpoint.clone(),
            cause: error.to_string(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path_and_query, body).await?;
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(format!("{e}: {text}")))
    }

    // --- notebooks ------------------------------------------------------------------------

    /// `POST /v1/{p}/notebooks` with a `NotebookCreateRequest` body (absent fields left out).
    pub async fn create_notebook(
        &self,
        body: &impl Serialize,
    ) -> Result<NotebookResp, ClientError> {
        let body = without_nulls(
            serde_json::to_value(body).map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        self.call(
            reqwest::Method::POST,
            &self.project_path("/notebooks"),
            Some(&body),
        )
        .await
    }

    /// `GET /v1/{p}/notebooks?{query}` (e.g. `limit=100&name=x`).
    pub async fn list_notebooks(&self, query: &str) -> Result<NotebookList, ClientError> {
        let path = self.project_path(&format!("/notebooks?{query}"));
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Every notebook of the project, page by page.
    pub async fn all_notebooks(&self) -> Result<Vec<NotebookResp>, ClientError> {
        let mut all = Vec::new();
        loop {
            let page = self
                .list_notebooks(&format!("limit=200&offset={}", all.len()))
                .await?;
            let got = page.data.len();
            all.extend(page.data);
            if got == 0 || all.len() as i64 >= page.total {
                return Ok(all);
            }
        }
    }

    pub async fn show_notebook(&self, id: &str) -> Result<NotebookResp, ClientError> {
        let path = self.project_path(&format!("/notebooks/{}", encode(id)));
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// `duration` in ms (-1: no auto-stop), `kind` `TIMING` or `IDLE`.
    pub async fn start_notebook(
        &self,
        id: &str,
        duration: Option<i64>,
        kind: Option<&str>,
    ) -> Result<NotebookResp, ClientError> {
        let mut query = Vec::new();
        if let Some(duration) = duration {
            query.push(format!("duration={duration}"));
        }
        if let Some(kind) = kind {
            query.push(format!("type={}", encode(kind)));
        }
        let mut path = self.project_path(&format!("/notebooks/{}/start", encode(id)));
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        self.call(reqwest::Method::POST, &path, None).await
    }

    pub async fn stop_notebook(&self, id: &str) -> Result<NotebookResp, ClientError> {
        let path = self.project_path(&format!("/notebooks/{}/stop", encode(id)));
        self.call(reqwest::Method::POST, &path, None).await
    }

    pub async fn delete_notebook(&self, id: &str) -> Result<NotebookResp, ClientError> {
        let path = self.project_path(&format!("/notebooks/{}", encode(id)));
        self.call(reqwest::Method::DELETE, &path, None).await
    }

    pub async fn show_lease(&self, id: &str) -> Result<LeaseResp, ClientError> {
        let path = self.project_path(&format!("/notebooks/{}/lease", encode(id)));
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Renews the lease: `duration` ms more from now.
    pub async fn renew_lease(&self, id: &str, duration: i64) -> Result<LeaseResp, ClientError> {
        let path = self.project_path(&format!(
            "/notebooks/{}/lease?duration={duration}",
            encode(id)
        ));
        self.call(reqwest::Method::PATCH, &path, None).await
    }

    pub async fn list_flavors(&self) -> Result<FlavorList, ClientError> {
        let path = self.project_path("/notebooks/flavors?limit=100");
        self.call(reqwest::Method::GET, &path, None).await
    }

    pub async fn list_images(&self) -> Result<ImageList, ClientError> {
        let path = self.project_path("/images?limit=200");
        self.call(reqwest::Method::GET, &path, None).await
    }

    pub async fn events(&self, id: &str) -> Result<NotebookEventList, ClientError> {
        let path = self.project_path(&format!("/notebooks/{}/events", encode(id)));
        self.call(reqwest::Method::GET, &path, None).await
    }

    // --- key pairs ------------------------------------------------------------------------

    pub async fn create_keypair(
        &self,
        name: &str,
        public_key: Option<&str>,
    ) -> Result<KeypairResponse, ClientError> {
        let mut keypair = serde_json::json!({ "name": name });
        if let Some(key) = public_key {
            keypair["public_key"] = Value::from(key.trim());
        }
        let body = serde_json::json!({ "keypair": keypair });
        self.call(
            reqwest::Method::POST,
            &self.project_path("/keypairs"),
            Some(&body),
        )
        .await
    }

    pub async fn list_keypairs(&self) -> Result<KeypairList, ClientError> {
        self.call(reqwest::Method::GET, &self.project_path("/keypairs"), None)
            .await
    }

    pub async fn show_keypair(&self, name: &str) -> Result<KeypairResponse, ClientError> {
        let path = self.project_path(&format!("/keypairs/{}", encode(name)));
        self.call(reqwest::Method::GET, &path, None).await
    }

    pub async fn delete_keypair(&self, name: &str) -> Result<(), ClientError> {
        let path = self.project_path(&format!("/keypairs/{}", encode(name)));
        self.send(reqwest::Method::DELETE, &path, None).await?;
        Ok(())
    }

    // --- names ----------------------------------------------------------------------------

    /// A notebook id from an id or a name (which must be unique in the project).
    pub async fn resolve(&self, name_or_id: &str) -> Result<String, ClientError> {
        if is_uuid(name_or_id) {
            return Ok(name_or_id.to_owned());
        }
        let page = self
            .list_notebooks(&format!("name={}&limit=200", encode(name_or_id)))
            .await?;
        let matches: Vec<&NotebookResp> =
            page.data.iter().filter(|n| n.name == name_or_id).collect();
        match matches.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(ClientError::NotFound(format!(
                "no notebook is named `{name_or_id}`"
            ))),
            many => Err(ClientError::NotFound(format!(
                "{} notebooks are named `{name_or_id}`; use an id: {}",
                many.len(),
                many.iter()
                    .map(|n| n.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    // --- progress -------------------------------------------------------------------------

    /// The notebook's progress stream (Server-Sent Events). Reconnects with `Last-Event-ID`
    /// when the connection drops (a server restart), for up to `patience`.
    pub fn progress(&self, id: &str, patience: Duration) -> Progress {
        Progress {
            client: self.clone(),
            id: id.to_owned(),
            last_id: None,
            response: None,
            buffer: String::new(),
            patience,
            done: false,
        }
    }
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Err(ClientError::Api {
        status: status.as_u16(),
        code: body["error_code"].as_str().unwrap_or("HTTP").to_owned(),
        message: body["error_msg"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}: {text}")),
    })
}

/// One item of a progress stream.
#[derive(Debug, Clone)]
pub enum ProgressItem {
    Event(NotebookEventResp),
    /// The operation is over; the notebook's status.
    End(String),
}

pub struct Progress {
    client: Client,
    id: String,
    last_id: Option<i64>,
    response: Option<reqwest::Response>,
    buffer: String,
    patience: Duration,
    done: bool,
}

impl Progress {
    /// The next event, or `None` after the end.
    pub async fn next(&mut self) -> Result<Option<ProgressItem>, ClientError> {
        let mut retry_until: Option<tokio::time::Instant> = None;
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(item) = self.parse_one()? {
                return Ok(Some(item));
            }
            if self.response.is_none() {
                match self.connect().await {
                    Ok(response) => {
                        self.response = Some(response);
                        retry_until = None;
                    }
                    Err(ClientError::Unreachable { .. })
                    | Err(ClientError::Api {
                        status: 502..=504, ..
                    }) => {
                        let until = *retry_until
                            .get_or_insert_with(|| tokio::time::Instant::now() + self.patience);
                        if tokio::time::Instant::now() >= until {
                            return Err(ClientError::Unreachable {
                                endpoint: self.client.profile.endpoint.clone(),
                                cause: "the progress stream could not be resumed".to_owned(),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                    Err(other) => return Err(other),
                }
            }
            let response = self.response.as_mut().expect("connected");
            match response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                // Dropped before the end (a restart): resume after the last event.
                Ok(None) | Err(_) => {
                    self.response = None;
                    self.buffer.clear();
                }
            }
        }
    }

    async fn connect(&self) -> Result<reqwest::Response, ClientError> {
        let path = self
            .client
            .project_path(&format!("/notebooks/{}/progress", encode(&self.id)));
        let mut request = self
            .client
            .signed(reqwest::Method::GET, &path, Vec::new())?;
        if let Some(last) = self.last_id {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.client.unreachable(e))?;
        check(response).await
    }

    fn parse_one(&mut self) -> Result<Option<ProgressItem>, ClientError> {
        while let Some(at) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..at + 2).collect();
            let (mut id, mut event, mut data) = (None, "message", String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = if v.trim() == "end" { "end" } else { "event" };
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() {
                continue;
            }
            if event == "end" {
                self.done = true;
                let status: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Ok(Some(ProgressItem::End(
                    status["status"].as_str().unwrap_or_default().to_owned(),
                )));
            }
            let parsed: NotebookEventResp = serde_json::from_str(&data)
                .map_err(|e| ClientError::Protocol(format!("bad progress event: {e}")))?;
            if let Some(id) = id {
                self.last_id = Some(id);
            }
            return Ok(Some(ProgressItem::Event(parsed)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_told_apart() {
        assert!(is_uuid("554f1252-0b7e-401b-840a-805e869f2486"));
        assert!(!is_uuid("my-notebook"));
        assert!(!is_uuid("554f1252x0b7e-401b-840a-805e869f2486"));
    }

    #[test]
    fn nulls_are_left_out_of_bodies() {
        let body = without_nulls(serde_json::json!({"a": null, "b": {"c": null, "d": 1}}));
        assert_eq!(body, serde_json::json!({"b": {"d": 1}}));
    }
}
