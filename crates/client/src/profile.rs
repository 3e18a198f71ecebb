//! CLI profiles: `~/.config/atelier/config.toml` (or `$XDG_CONFIG_HOME/atelier/config.toml`),
//! one table per profile:
//!
//! ```toml
//! [default]
//! endpoint = "http://127.0.0.1:8080"
//! project_id = "…"
//! access_key = "…"
//! secret_key = "…"
//! ```
//!
//! `ATELIER_ENDPOINT`, `ATELIER_PROJECT_ID`, `ATELIER_ACCESS_KEY` and `ATELIER_SECRET_KEY`
//! override the profile's values; `ATELIER_PROFILE` picks the profile.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClientError;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Profile {
    pub endpoint: String,
    pub project_id: String,
    pub access_key: String,
    pub secret_key: String,
}

/// The secret key never reaches a log or an error message.
impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("endpoint", &self.endpoint)
            .field("project_id", &self.project_id)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Where profiles live: `$XDG_CONFIG_HOME/atelier/config.toml`, else
/// `$HOME/.config/atelier/config.toml`.
// The client's configuration layer: where profiles live follows the XDG convention.
#[allow(clippy::disallowed_methods)]
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("atelier").join("config.toml"))
}

fn read_all(path: &Path) -> Result<BTreeMap<String, Profile>, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            ClientError::Config(format!(
                "{} is not a valid profile file: {e}",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(error) => Err(ClientError::Config(format!(
            "cannot read {}: {error}",
            path.display()
        ))),
    }
}

/// The profile `name` from `path`, with the `ATELIER_*` overrides applied. Every value must
/// end up set.
// The client's configuration layer: `ATELIER_*` variables override the profile's fields.
#[allow(clippy::disallowed_methods)]
pub fn load(path: Option<&Path>, name: &str) -> Result<Profile, ClientError> {
    let mut profile = match path {
        Some(path) => read_all(path)?.remove(name).unwrap_or_default(),
        None => Profile::default(),
    };
    for (variable, field) in [
        ("ATELIER_ENDPOINT", &mut profile.endpoint),
        ("ATELIER_PROJECT_ID", &mut profile.project_id),
        ("ATELIER_ACCESS_KEY", &mut profile.access_key),
        ("ATELIER_SECRET_KEY", &mut profile.secret_key),
    ] {
        if let Ok(value) = std::env::var(variable)
            && !value.is_empty()
        {
            *field = value;
        }
    }
    let missing: Vec<&str> = [
        ("endpoint", &profile.endpoint),
        ("project_id", &profile.project_id),
        ("access_key", &profile.access_key),
        ("secret_key", &profile.secret_key),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_empty())
    .map(|(k, _)| k)
    .collect();
    if !missing.is_empty() {
        let place = path.map_or("no profile file".to_owned(), |p| p.display().to_string());
        return Err(ClientError::Config(format!(
            "profile `{name}` ({place}) lacks {}; run `atelier serve` once to write the local \
             admin's profile, or set ATELIER_ENDPOINT, ATELIER_PROJECT_ID, ATELIER_ACCESS_KEY \
             and ATELIER_SECRET_KEY",
            missing.join(", ")
        )));
    }
    profile.endpoint = profile.endpoint.trim_end_matches('/').to_owned();
    Ok(profile)
}

/// Adds `profile` as `name` unless the file already has that profile. Returns whether it was
/// written. The file is 0600: it holds a secret key.
pub fn write_if_absent(path: &Path, name: &str, profile: &Profile) -> Result<bool, ClientError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut all = read_all(path)?;
    if all.contains_key(name) {
        return Ok(false);
    }
    all.insert(name.to_owned(), profile.clone());
    let text = toml::to_string(&all).map_err(|e| ClientError::Config(e.to_string()))?;
    let io =
        |e: std::io::Error| ClientError::Config(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let partial = path.with_extension("toml.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(endpoint: &str) -> Profile {
        Profile {
            endpoint: endpoint.to_owned(),
            project_id: "p".to_owned(),
            access_key: "ak".to_owned(),
            secret_key: "sk-secret".to_owned(),
        }
    }

    #[test]
    fn profiles_are_written_once_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atelier/config.toml");
        assert!(write_if_absent(&path, "default", &sample("http://a/")).unwrap());
        assert!(!write_if_absent(&path, "default", &sample("http://b")).unwrap());
        assert!(write_if_absent(&path, "other", &sample("http://c")).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let all = read_all(&path).unwrap();
        assert_eq!(all["default"].endpoint, "http://a/");
        assert_eq!(all["other"].endpoint, "http://c");
        assert!(!format!("{:?}", all["default"]).contains("sk-secret"));
    }
}
