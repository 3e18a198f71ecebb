//! Custom hooks (spec §2.2.3): scripts a notebook runs inside its sandbox, as `ma-user`,
//! before JupyterLab starts (`pre_start`) and once it answers (`post_start`). Parsed from
//! the create or update body by the control plane (`atelier_control::hooks`), carried to
//! the runtime in its sandbox spec.
use std::fmt;

/// Where a hook runs in a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// After the sandbox exists, before JupyterLab starts: a failure fails the start.
    PreStart,
    /// Once JupyterLab answers.
    PostStart,
}

impl HookPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::PreStart => "pre_start",
            HookPoint::PostStart => "post_start",
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the hook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookScript {
    /// `type: COMMAND`: the script's text (sent base64-encoded), run by the interpreter its
    /// `#!` line names, else `/bin/sh`.
    Inline(String),
    /// `type: SCRIPT`: an absolute path in the notebook (the image, or the work volume under
    /// `/home/ma-user/work`).
    Path(String),
}

/// `mode`: whether the start waits for the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookMode {
    /// The start waits; a failure fails it.
    Block,
    /// The hook runs in the background; a failure is only reported (the spec's default).
    #[default]
    Async,
}

impl HookMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HookMode::Block => "BLOCK",
            HookMode::Async => "ASYNC",
        }
    }
}

/// One configured hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub script: HookScript,
    pub mode: HookMode,
}

impl Hook {
    /// How events and failures name the hook's script: `inline script (N bytes)` or its path.
    pub fn describe(&self) -> String {
        match &self.script {
            HookScript::Inline(text) => format!("inline script ({} bytes)", text.len()),
            HookScript::Path(path) => path.clone(),
        }
    }
}

/// `hooks.container_hooks`: at most one hook per point.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerHooks {
    pub pre_start: Option<Hook>,
    pub post_start: Option<Hook>,
}

impl ContainerHooks {
    pub fn is_empty(&self) -> bool {
        self.pre_start.is_none() && self.post_start.is_none()
    }

    pub fn get(&self, point: HookPoint) -> Option<&Hook> {
        match point {
            HookPoint::PreStart => self.pre_start.as_ref(),
            HookPoint::PostStart => self.post_start.as_ref(),
        }
    }
}

/// The longest inline script accepted (decoded), and the longest script path.
pub const MAX_INLINE_SCRIPT_BYTES: usize = 64 * 1024;
pub const MAX_SCRIPT_PATH_BYTES: usize = 1024;

/// Whether `path` may name a `SCRIPT` hook: absolute, at most [`MAX_SCRIPT_PATH_BYTES`], no
/// NUL or line break, no `.` or `..` component.
pub fn valid_script_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && path.len() <= MAX_SCRIPT_PATH_BYTES
        && !path.contains(['\0', '\n', '\r'])
        && !path.split('/').any(|part| part == "." || part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_paths_are_absolute_and_plain() {
        for good in [
            "/home/ma-user/work/setup.sh",
            "/opt/hooks/pre start.sh",
            "/usr/bin/true",
        ] {
            assert!(valid_script_path(good), "{good}");
        }
        let long = format!("/{}", "a".repeat(MAX_SCRIPT_PATH_BYTES));
        for bad in [
            "",
            "/",
            "setup.sh",
            "./setup.sh",
            "/home/ma-user/work/../x",
            "/a/./b",
            "/a\nb",
            "/a\0b",
            long.as_str(),
        ] {
            assert!(!valid_script_path(bad), "{bad:?}");
        }
    }
}
