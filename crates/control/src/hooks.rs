//! The `hooks` object of a create or update body (spec §2.2.3), checked into
//! [`ContainerHooks`], and the JSON text the notebook record keeps of it (`hooks_json`).
//!
//! `{"container_hooks": {"pre_start": Config, "post_start": Config}}`, `Config` =
//! `{"script", "type": "COMMAND"|"SCRIPT" (default SCRIPT), "mode": "BLOCK"|"ASYNC"
//! (default ASYNC)}`. A `COMMAND` script is base64 text (line breaks allowed, as `base64`
//! writes them); a `SCRIPT` is an absolute path in the notebook (the image, or the work
//! volume under `/home/ma-user/work`).
use base64ct::Encoding as _;
use serde_json::{Map, Value, json};

use atelier_domain::events::EventDraft;
use atelier_domain::hooks::{MAX_INLINE_SCRIPT_BYTES, valid_script_path};
use atelier_domain::{ContainerHooks, EventLevel, Hook, HookMode, HookPoint, HookScript};
use atelier_runtime::{HookActivity, HookReport};

/// What is wrong with a `hooks` object, and where (`hooks.container_hooks.pre_start.type`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("'{field}' must be of the '{expected}' type")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("'{0}' is a required property")]
    Missing(String),
    #[error("'{0}' property value is incorrect")]
    BadValue(String),
}

fn object<'a>(value: &'a Value, field: &str) -> Result<Option<&'a Map<String, Value>>, HookError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        _ => Err(HookError::WrongType {
            field: field.to_owned(),
            expected: "object",
        }),
    }
}

fn text<'a>(
    config: &'a Map<String, Value>,
    field: &str,
    at: &str,
) -> Result<Option<&'a str>, HookError> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(HookError::WrongType {
            field: format!("{at}.{field}"),
            expected: "string",
        }),
    }
}

/// Decodes base64 text, standard alphabet, with or without padding; whitespace (the line
/// breaks `base64` inserts) is ignored.
fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64ct::Base64::decode_vec(&compact)
        .or_else(|_| base64ct::Base64Unpadded::decode_vec(&compact))
        .ok()
}

fn parse_hook(value: &Value, at: &str) -> Result<Option<Hook>, HookError> {
    let Some(config) = object(value, at)? else {
        return Ok(None);
    };
    let script =
        text(config, "script", at)?.ok_or_else(|| HookError::Missing(format!("{at}.script")))?;
    let mode = match text(config, "mode", at)? {
        None | Some("") => HookMode::default(),
        Some("BLOCK") => HookMode::Block,
        Some("ASYNC") => HookMode::Async,
        Some(_) => return Err(HookError::BadValue(format!("{at}.mode"))),
    };
    let bad_script = || HookError::BadValue(format!("{at}.script"));
    let script = match text(config, "type", at)? {
        None | Some("") | Some("SCRIPT") => {
            if !valid_script_path(script) {
                return Err(bad_script());
            }
            HookScript::Path(script.to_owned())
        }
        Some("COMMAND") => {
            let decoded = decode_base64(script).ok_or_else(bad_script)?;
            if decoded.is_empty() || decoded.len() > MAX_INLINE_SCRIPT_BYTES {
                return Err(bad_script());
            }
            let text = String::from_utf8(decoded).map_err(|_| bad_script())?;
            if text.contains('\0') {
                return Err(bad_script());
            }
            HookScript::Inline(text)
        }
        Some(_) => return Err(HookError::BadValue(format!("{at}.type"))),
    };
    Ok(Some(Hook { script, mode }))
}

/// Checks a `hooks` object; `null` means none. Unknown keys are ignored, as ModelArts does.
pub fn parse(value: &Value) -> Result<Option<ContainerHooks>, HookError> {
    let Some(hooks) = object(value, "hooks")? else {
        return Ok(None);
    };
    let mut parsed = ContainerHooks::default();
    let container = match hooks.get("container_hooks") {
        Some(container) => object(container, "hooks.container_hooks")?,
        None => None,
    };
    for point in [HookPoint::PreStart, HookPoint::PostStart] {
        let at = format!("hooks.container_hooks.{point}");
        let hook = match container.and_then(|c| c.get(point.as_str())) {
            Some(config) => parse_hook(config, &at)?,
            None => None,
        };
        match point {
            HookPoint::PreStart => parsed.pre_start = hook,
            HookPoint::PostStart => parsed.post_start = hook,
        }
    }
    Ok(Some(parsed))
}

/// The JSON text the record keeps: the ModelArts shape with `type` and `mode` spelled out.
pub fn encode(hooks: &ContainerHooks) -> String {
    let mut container = Map::new();
    for point in [HookPoint::PreStart, HookPoint::PostStart] {
        if let Some(hook) = hooks.get(point) {
            let (kind, script) = match &hook.script {
                HookScript::Inline(text) => {
                    ("COMMAND", base64ct::Base64::encode_string(text.as_bytes()))
                }
                HookScript::Path(path) => ("SCRIPT", path.clone()),
            };
            container.insert(
                point.as_str().to_owned(),
                json!({"script": script, "type": kind, "mode": hook.mode.as_str()}),
            );
        }
    }
    json!({ "container_hooks": container }).to_string()
}

/// The hooks a record's `hooks_json` holds. Text that does not pass today's checks (kept
/// by an Atelier that stored `hooks` unchecked) runs nothing, and says so in the log.
pub fn decode_stored(text: Option<&str>) -> ContainerHooks {
    let Some(text) = text else {
        return ContainerHooks::default();
    };
    let parsed = serde_json::from_str::<Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|value| parse(&value).map_err(|e| e.to_string()));
    match parsed {
        Ok(hooks) => hooks.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "stored hooks are not valid: none run");
            ContainerHooks::default()
        }
    }
}

/// The notebook event a hook's report makes (reasons in `events::HOOK_REASONS`).
pub fn event(report: &HookReport) -> EventDraft {
    let hook = match (report.point, report.mode) {
        (HookPoint::PostStart, HookMode::Async) => format!("{} hook (ASYNC)", report.point),
        (point, _) => format!("{point} hook"),
    };
    let (level, reason, message) = match &report.what {
        HookActivity::Started(script) => (
            EventLevel::Normal,
            "HookStarted",
            format!("{hook} started: {script}"),
        ),
        HookActivity::Output(lines) => (
            EventLevel::Normal,
            "HookOutput",
            format!("{hook} output:\n{lines}"),
        ),
        HookActivity::Succeeded { elapsed } => (
            EventLevel::Normal,
            "HookSucceeded",
            format!("{hook} succeeded ({:.1} s)", elapsed.as_secs_f64()),
        ),
        HookActivity::Failed(why) => (EventLevel::Warning, "HookFailed", why.clone()),
    };
    EventDraft {
        level,
        reason,
        message,
        step: None,
        step_status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64ct::Base64::encode_string(text.as_bytes())
    }

    #[test]
    fn defaults_are_script_and_async() {
        let hooks = parse(&json!({"container_hooks": {"pre_start": {"script": "/opt/pre.sh"}}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            hooks.pre_start,
            Some(Hook {
                script: HookScript::Path("/opt/pre.sh".to_owned()),
                mode: HookMode::Async
            })
        );
        assert_eq!(hooks.post_start, None);
    }

    #[test]
    fn commands_are_base64_text_with_or_without_line_breaks_and_padding() {
        let script = "#!/bin/bash\necho hello > /home/ma-user/work/hello.txt\n".repeat(3);
        let mut wrapped = b64(&script);
        wrapped.insert(20, '\n');
        for encoded in [
            b64(&script),
            wrapped,
            b64(&script).trim_end_matches('=').to_owned(),
        ] {
            let hooks = parse(&json!({"container_hooks": {"post_start": {
                "script": encoded, "type": "COMMAND", "mode": "BLOCK"}}}))
            .unwrap()
            .unwrap();
            assert_eq!(
                hooks.post_start,
                Some(Hook {
                    script: HookScript::Inline(script.clone()),
                    mode: HookMode::Block
                })
            );
        }
    }

    #[test]
    fn encode_round_trips() {
        let hooks = ContainerHooks {
            pre_start: Some(Hook {
                script: HookScript::Inline("echo hi\n".to_owned()),
                mode: HookMode::Block,
            }),
            post_start: Some(Hook {
                script: HookScript::Path("/home/ma-user/work/post.sh".to_owned()),
                mode: HookMode::Async,
            }),
        };
        assert_eq!(decode_stored(Some(&encode(&hooks))), hooks);
        assert_eq!(decode_stored(Some("{}")), ContainerHooks::default());
        assert_eq!(decode_stored(Some("not json")), ContainerHooks::default());
        assert_eq!(decode_stored(None), ContainerHooks::default());
    }

    #[test]
    fn bad_values_name_their_field() {
        let pre = "hooks.container_hooks.pre_start";
        let cases = [
            (
                json!("x"),
                HookError::WrongType {
                    field: "hooks".into(),
                    expected: "object",
                },
            ),
            (
                json!({"container_hooks": []}),
                HookError::WrongType {
                    field: "hooks.container_hooks".into(),
                    expected: "object",
                },
            ),
            (
                json!({"container_hooks": {"pre_start": {}}}),
                HookError::Missing(format!("{pre}.script")),
            ),
            (
                json!({"container_hooks": {"pre_start": {"script": 5}}}),
                HookError::WrongType {
                    field: format!("{pre}.script"),
                    expected: "string",
                },
            ),
            (
                json!({"container_hooks": {"pre_start": {"script": "/x", "type": "SHELL"}}}),
                HookError::BadValue(format!("{pre}.type")),
            ),
            (
                json!({"container_hooks": {"pre_start": {"script": "/x", "mode": "SYNC"}}}),
                HookError::BadValue(format!("{pre}.mode")),
            ),
            (
                json!({"container_hooks": {"pre_start": {"script": "relative.sh"}}}),
                HookError::BadValue(format!("{pre}.script")),
            ),
            (
                json!({"container_hooks": {"pre_start": {"script": "not base64!", "type": "COMMAND"}}}),
                HookError::BadValue(format!("{pre}.script")),
            ),
            (
                json!({"container_hooks": {"pre_start": {"script": "", "type": "COMMAND"}}}),
                HookError::BadValue(format!("{pre}.script")),
            ),
            (
                json!({"container_hooks": {"pre_start": {"script": b64(&"x".repeat(MAX_INLINE_SCRIPT_BYTES + 1)), "type": "COMMAND"}}}),
                HookError::BadValue(format!("{pre}.script")),
            ),
            (
                json!({"container_hooks": {"post_start": {"script": "//8=", "type": "COMMAND"}}}),
                HookError::BadValue("hooks.container_hooks.post_start.script".into()),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(&value), Err(expected), "{value}");
        }
        assert_eq!(parse(&Value::Null), Ok(None));
        assert_eq!(parse(&json!({})), Ok(Some(ContainerHooks::default())));
    }
}
