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

/// What [`write_admin_profile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// There was no such profile; now there is.
    Added,
    /// The profile named the same endpoint: a server that has since started on a new data dir,
    /// so its old keys cannot work there any more. Replaced.
    Replaced,
    /// The profile names another endpoint (another server); left as it was.
    Kept,
}

/// Writes the profile of a freshly bootstrapped server as `name`: added when absent, replaced
/// when the existing one names the same endpoint, kept when it names another one. The file is
/// 0600: it holds a secret key.
pub fn write_admin_profile(
    path: &Path,
    name: &str,
    profile: &Profile,
) -> Result<Written, ClientError> {
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let mut all = read_all(path)?;
    let outcome = match all.get(name) {
        None => Written::Added,
        Some(old) if old == profile => return Ok(Written::Kept),
        Some(old) if same(&old.endpoint, &profile.endpoint) => Written::Replaced,
        Some(_) => return Ok(Written::Kept),
    };
    all.insert(name.to_owned(), profile.clone());
    write_all(path, &all)?;
    Ok(outcome)
}

fn write_all(path: &Path, all: &BTreeMap<String, Profile>) -> Result<(), ClientError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = toml::to_string(all).map_err(|e| ClientError::Config(e.to_string()))?;
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
    Ok(())
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
    fn admin_profiles_are_added_replaced_on_the_same_endpoint_and_kept_on_another() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atelier/config.toml");
        let w = |name: &str, p: &Profile| write_admin_profile(&path, name, p).unwrap();
        assert_eq!(w("default", &sample("http://a/")), Written::Added);
        // Another server (another endpoint) does not take the user's default.
        assert_eq!(w("default", &sample("http://b")), Written::Kept);
        assert_eq!(w("other", &sample("http://c")), Written::Added);
        // The same endpoint with new keys: that server was bootstrapped again.
        let mut renewed = sample("http://a");
        renewed.access_key = "ak2".to_owned();
        assert_eq!(w("default", &renewed), Written::Replaced);
        assert_eq!(w("default", &renewed), Written::Kept);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let all = read_all(&path).unwrap();
        assert_eq!(all["default"].access_key, "ak2");
        assert_eq!(all["other"].endpoint, "http://c");
        assert!(!format!("{:?}", all["default"]).contains("sk-secret"));
    }
}
