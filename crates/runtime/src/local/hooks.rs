//! Custom hooks (spec §2.2.3) in a local sandbox, and the end of every start they sit in:
//! the notebook's dynamic storage and its `pre_start` hook, then JupyterLab's settings on its
//! claim channel, readiness, then the `post_start` hook.
//!
//! A hook enters the running sandbox exactly as an SSH session does (`ssh.rs`): its
//! `nsenter` child joins the notebook's cgroup and loads the sandbox's seccomp filter with
//! `no_new_privs` before it executes, then enters every namespace of the sandbox (network
//! included) as uid 1000 — the notebook's host uid. It can do nothing a notebook's own
//! terminal cannot. Its script comes from the notebook (`SCRIPT`: a path in the image or the
//! work volume) or over a pipe (`COMMAND`: at `/dev/fd/3`, never on a command line the host's
//! `ps` shows); it runs in the work dir with the notebook's environment, its stdout and
//! stderr together going to the notebook's events in bounded chunks. Past `hook_timeout` its
//! process group is killed. A `pre_start` hook runs while JupyterLab waits for its settings,
//! having loaded nothing (the launcher's `ATELIER_DEFER`), so a notebook with one always
//! starts cold; it and a `BLOCK` `post_start` hook fail the start (step 4) when they fail.
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::watch;

use atelier_domain::{Hook, HookMode, HookPoint, HookScript, NotebookId};

use super::sys::ChildSetup;
use super::{Ended, LocalRuntime, step_error};
use crate::{HookActivity, HookReport, Progress, RuntimeError, SandboxEvent, SandboxSpec};

/// Where an inline script reaches the hook's interpreter.
const FD_SCRIPT: i32 = 3;

/// Runs in the sandbox as `ma-user`: into the work dir, then the script.
const HOOK_WRAPPER: &str = r#"cd /home/ma-user/work || exit 126
case "$1" in
  --path)
    [ -e "$2" ] || { echo "atelier: $2: no such file in the notebook" >&2; exit 127; }
    if [ -x "$2" ]; then exec "$2"; else exec /bin/sh "$2"; fi ;;
  --inline) shift; exec "$@" /dev/fd/3 ;;
esac
exit 126
"#;

/// Output goes to events in chunks of at most this many bytes, at most once a second…
const CHUNK_BYTES: usize = 4096;
const CHUNK_EVERY: Duration = Duration::from_secs(1);
/// …and at most this much per run; the rest is dropped (its last lines still end up in a
/// failure's reason).
const MAX_REPORTED_BYTES: usize = 64 * 1024;
/// Longer lines are cut.
const MAX_LINE_CHARS: usize = 1000;
/// How many last lines a failure names, each cut to this length.
const TAIL_LINES: usize = 5;
const TAIL_LINE_CHARS: usize = 200;

/// Where a hook's reports go: the start's [`Progress`] (which it waits for), or the
/// runtime's events (in the background).
enum Reports<'a> {
    Progress(&'a dyn Progress),
    Events {
        id: NotebookId,
        events: tokio::sync::broadcast::Sender<SandboxEvent>,
    },
}

impl Reports<'_> {
    async fn send(&self, point: HookPoint, mode: HookMode, what: HookActivity) {
        let report = HookReport { point, mode, what };
        match self {
            Reports::Progress(progress) => progress.hook(&report).await,
            Reports::Events { id, events } => {
                let _ = events.send(SandboxEvent::Hook { id: *id, report });
            }
        }
    }
}

/// `value` as one word for `sh`: in single quotes, each `'` as `'\''`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The interpreter of an inline script: its `#!` line's (program and at most one
/// argument, as the kernel reads it), else `/bin/sh`.
fn interpreter(script: &str) -> Vec<String> {
    let Some(line) = script.lines().next().and_then(|l| l.strip_prefix("#!")) else {
        return vec!["/bin/sh".to_owned()];
    };
    let line = line.trim();
    match line.split_once([' ', '\t']) {
        _ if line.is_empty() => vec!["/bin/sh".to_owned()],
        Some((program, argument)) => vec![program.to_owned(), argument.trim().to_owned()],
        None => vec![line.to_owned()],
    }
}

/// What a hook wrote, as it reaches the events and a failure's reason.
#[derive(Default)]
struct Output {
    /// Bytes not yet split into lines.
    partial: Vec<u8>,
    /// Lines not yet reported.
    chunk: String,
    reported: usize,
    truncated: bool,
    tail: std::collections::VecDeque<String>,
}

impl Output {
    fn push(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&line[..end]);
        }
        if self.partial.len() > MAX_LINE_CHARS * 4 {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
    }

    /// What is left of an unfinished last line.
    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
    }

    fn line(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches('\r');
        let line: String = text.chars().take(MAX_LINE_CHARS).collect();
        self.tail
            .push_back(line.chars().take(TAIL_LINE_CHARS).collect());
        if self.tail.len() > TAIL_LINES {
            self.tail.pop_front();
        }
        if self.reported + self.chunk.len() + line.len() < MAX_REPORTED_BYTES {
            self.chunk.push_str(&line);
            self.chunk.push('\n');
        } else {
            self.truncated = true;
        }
    }

    /// The lines to report now, if any (with a note, once, that the rest is dropped).
    fn take_chunk(&mut self) -> Option<String> {
        if self.chunk.is_empty() {
            return None;
        }
        let mut chunk = std::mem::take(&mut self.chunk);
        self.reported += chunk.len();
        if self.truncated {
            chunk.push_str(&format!(
                "[atelier: output past {} KiB is not recorded]\n",
                MAX_REPORTED_BYTES / 1024
            ));
            self.reported = MAX_REPORTED_BYTES;
        }
        Some(chunk.trim_end_matches('\n').to_owned())
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self
            .tail
            .iter()
            .map(String::as_str)
            .filter(|l| !l.trim().is_empty())
            .collect();
        if lines.is_empty() {
            "no output".to_owned()
        } else {
            format!("last output: {}", lines.join(" | "))
        }
    }
}

/// How a hook run ended.
enum HookEnd {
    Exited(std::process::ExitStatus),
    TimedOut,
    /// The sandbox went away: stopped (`None`) or ended by itself.
    SandboxGone(Option<String>),
}

impl LocalRuntime {
    /// The end of a start, cold or warm: the `pre_start` hook, JupyterLab's settings over
    /// `channel`, readiness, then the `post_start` hook. `env` is the notebook's environment.
    pub(super) async fn serve(
        &self,
        spec: &SandboxSpec,
        env: Vec<(String, String)>,
        exited: watch::Receiver<Ended>,
        mut channel: std::os::unix::net::UnixStream,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        let id = spec.notebook_id;
        if let Some(hook) = &spec.hooks.pre_start {
            // Its dynamic storage first: the hook may read from /data.
            progress.sandbox_running().await;
            // Always waited for: JupyterLab starts only once it has succeeded.
            self.run_hook(
                id,
                HookPoint::PreStart,
                hook,
                HookMode::Block,
                &env,
                exited.clone(),
                &Reports::Progress(progress),
            )
            .await
            .map_err(RuntimeError::Fatal)?;
        }
        // A sandbox that has ended already (an image that cannot run) is reported by
        // `wait_ready`, with its reason.
        if let Err(error) =
            std::io::Write::write_all(&mut channel, super::claim_line(spec).as_bytes())
            && exited.borrow().is_none()
            && !matches!(error.kind(), std::io::ErrorKind::BrokenPipe)
        {
            return Err(step_error("JupyterLab's settings", error));
        }
        drop(channel);
        if spec.hooks.pre_start.is_none() {
            // Mounted while JupyterLab loads, before it answers and before a post_start hook.
            progress.sandbox_running().await;
        }
        self.wait_ready(spec, exited.clone()).await?;
        let Some(hook) = spec.hooks.post_start.clone() else {
            return Ok(());
        };
        match hook.mode {
            HookMode::Block => self
                .run_hook(
                    id,
                    HookPoint::PostStart,
                    &hook,
                    HookMode::Block,
                    &env,
                    exited,
                    &Reports::Progress(progress),
                )
                .await
                .map_err(RuntimeError::Fatal),
            HookMode::Async => {
                let Some(this) = self.me.upgrade() else {
                    return Ok(());
                };
                let reports = Reports::Events {
                    id,
                    events: self.events.clone(),
                };
                tokio::spawn(async move {
                    let _ = this
                        .run_hook(
                            id,
                            HookPoint::PostStart,
                            &hook,
                            HookMode::Async,
                            &env,
                            exited,
                            &reports,
                        )
                        .await;
                });
                Ok(())
            }
        }
    }

    /// Runs one hook in the notebook's sandbox to its end or its time limit, reporting as it
    /// goes. `Err` is the failure's reason (naming the hook, how it ended and its last
    /// lines); a hook cut short by a stop reports nothing more and counts as failed.
    #[allow(clippy::too_many_arguments)]
    async fn run_hook(
        &self,
        id: NotebookId,
        point: HookPoint,
        hook: &Hook,
        mode: HookMode,
        env: &[(String, String)],
        mut exited: watch::Receiver<Ended>,
        reports: &Reports<'_>,
    ) -> Result<(), String> {
        let name = format!("{point} hook ({})", hook.describe());
        reports
            .send(point, mode, HookActivity::Started(hook.describe()))
            .await;
        let started = tokio::time::Instant::now();
        let name = name.as_str();
        let fail = |text: String| async move {
            let reason = format!("{name} failed: {text}");
            reports
                .send(point, mode, HookActivity::Failed(reason.clone()))
                .await;
            Err(reason)
        };
        let (mut child, output) = match self.spawn_hook(id, hook, env) {
            Ok(spawned) => spawned,
            Err(error) => return fail(format!("it could not start: {error}")).await,
        };
        let pgid = child.id().map(|p| p as i32);
        let mut output = tokio::net::unix::pipe::Receiver::from_owned_fd(output).ok();
        let mut collected = Output::default();
        let mut buffer = vec![0u8; 8192];
        let deadline = started + self.config.hook_timeout;
        let mut flush = tokio::time::interval(CHUNK_EVERY);
        let how = loop {
            if let Some(chunk) = (collected.chunk.len() >= CHUNK_BYTES)
                .then(|| collected.take_chunk())
                .flatten()
            {
                reports.send(point, mode, HookActivity::Output(chunk)).await;
            }
            tokio::select! {
                status = child.wait() => match status {
                    Ok(status) => break HookEnd::Exited(status),
                    Err(error) => return fail(format!("cannot wait for it: {error}")).await,
                },
                read = async {
                    match output.as_mut() {
                        Some(pipe) => pipe.read(&mut buffer).await,
                        None => std::future::pending().await,
                    }
                } => match read {
                    Ok(0) | Err(_) => output = None,
                    Ok(n) => collected.push(&buffer[..n]),
                },
                _ = flush.tick() => {
                    if let Some(chunk) = collected.take_chunk() {
                        reports.send(point, mode, HookActivity::Output(chunk)).await;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break HookEnd::TimedOut,
                gone = async {
                    let ended = exited.wait_for(|ended| ended.is_some()).await;
                    ended.ok().and_then(|ended| ended.clone().flatten())
                } => break HookEnd::SandboxGone(gone.map(|reason| reason.to_string())),
            }
        };
        if !matches!(how, HookEnd::Exited(_))
            && let Some(pgid) = pgid
        {
            // Past the limit (or with its sandbox gone): every process of the hook, while
            // nsenter, its group's leader, is not reaped yet. A hook that ended by itself
            // keeps what it started in the background (a service a post-start hook starts).
            let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let _ = child.wait().await;
        // What is still in the pipe; a process the hook left running may hold it open: it
        // does not hold us up. What it writes later is not read (reading it for the
        // notebook's life would spend the server's CPU at the tenant's will): the pipe is
        // kept open, unread, until the sandbox ends, so such a writer blocks once it is full
        // (closing it would kill the writer with SIGPIPE).
        if let Some(mut pipe) = output.take() {
            let drained = tokio::time::timeout(Duration::from_millis(200), async {
                while let Ok(n) = pipe.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    collected.push(&buffer[..n]);
                }
            })
            .await;
            if drained.is_err() {
                let mut exited = exited.clone();
                tokio::spawn(async move {
                    let _ = exited.wait_for(|ended| ended.is_some()).await;
                    drop(pipe);
                });
            }
        }
        collected.finish();
        if let Some(chunk) = collected.take_chunk() {
            reports.send(point, mode, HookActivity::Output(chunk)).await;
        }
        let tail = collected.tail();
        let limit = self.config.hook_timeout;
        match how {
            HookEnd::Exited(status) if status.success() => {
                let elapsed = started.elapsed();
                reports
                    .send(point, mode, HookActivity::Succeeded { elapsed })
                    .await;
                Ok(())
            }
            HookEnd::Exited(status) => {
                use std::os::unix::process::ExitStatusExt;
                let how = match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(signal)) => format!("killed by signal {signal}"),
                    (None, None) => status.to_string(),
                };
                fail(format!("{how}; {tail}")).await
            }
            HookEnd::TimedOut => {
                fail(format!(
                    "it ran past the time limit of {} s and was killed; {tail}",
                    limit.as_secs()
                ))
                .await
            }
            // Stopped: whoever stopped it knows; nothing more to report.
            HookEnd::SandboxGone(None) => Err(format!("{name} was cut short by a stop")),
            HookEnd::SandboxGone(Some(reason)) => {
                fail(format!("the notebook's sandbox ended ({reason}); {tail}")).await
            }
        }
    }

    /// `nsenter` into the sandbox as uid 1000 running the hook's script, in its own process
    /// group, in the notebook's cgroup and under its seccomp filter. Returns the child and
    /// the read end of its stdout and stderr.
    fn spawn_hook(
        &self,
        id: NotebookId,
        hook: &Hook,
        env: &[(String, String)],
    ) -> Result<(tokio::process::Child, OwnedFd), RuntimeError> {
        let init = self
            .sandbox_init_pid(id)
            .ok_or_else(|| step_error("hook", "the notebook's sandbox is not running"))?;
        // `ma-user`'s group: 100 in a container image, 1000 on the host's /usr.
        let gid = std::fs::read_to_string(self.run_dir(id).join("gid"))
            .ok()
            .and_then(|g| g.trim().parse::<u32>().ok())
            .unwrap_or(1000)
            .to_string();
        // nsenter is the host's, run as root: it gets no variable of the notebook's (an
        // image's `Env` could name `LD_PRELOAD`). The wrapper, already in the sandbox as
        // ma-user, exports them.
        let mut wrapper = String::new();
        for (name, value) in env {
            let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if plain && !value.contains('\0') {
                wrapper.push_str(&format!("export {name}={}\n", shell_quote(value)));
            }
        }
        wrapper.push_str(HOOK_WRAPPER);
        let mut command = Command::new("/usr/bin/nsenter");
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .arg("-t")
            .arg(init.to_string())
            .args([
                "--user",
                "--mount",
                "--pid",
                "--ipc",
                "--uts",
                "--net",
                "--setuid",
                "1000",
                "--setgid",
                &gid,
                "--root",
                "--wd",
                "/bin/sh",
                "-c",
                &wrapper,
                "atelier-hook",
            ]);
        let mut fds = Vec::new();
        let mut script_writer = None;
        match &hook.script {
            HookScript::Path(path) => {
                command.args(["--path", path]);
            }
            HookScript::Inline(text) => {
                command.arg("--inline").args(interpreter(text));
                let (read, write) = std::io::pipe()?;
                // The interpreter opens `/dev/fd/3` anew, as the sandbox's uid: root's pipe
                // must let it (only the hook's own processes and root reach its descriptor).
                let read = std::fs::File::from(OwnedFd::from(read));
                read.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
                fds.push((OwnedFd::from(read), FD_SCRIPT));
                script_writer = Some((write, text.clone()));
            }
        }
        let (output, output_write) = std::io::pipe()?;
        command
            .stdin(Stdio::null())
            .stdout(output_write.try_clone()?)
            .stderr(output_write)
            .process_group(0)
            .kill_on_drop(true);
        ChildSetup {
            cgroup_procs: self.open_procs(id)?,
            fds,
            ids: None,
            seccomp: self.seccomp.clone(),
        }
        .apply(&mut command);
        let child = command
            .spawn()
            .map_err(|e| step_error("cannot start nsenter", e))?;
        // Our copies of the child's descriptors (the pipes' other ends) close here.
        drop(command);
        if let Some((mut write, text)) = script_writer {
            // The script may exceed a pipe's buffer; a hook that never reads it ends the
            // write with EPIPE when it exits.
            tokio::task::spawn_blocking(move || {
                let _ = std::io::Write::write_all(&mut write, text.as_bytes());
            });
        }
        Ok((child, output.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_sh() {
        let quoted = shell_quote("it's $HOME `id` \"x\"\nnext");
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("printf %s {quoted}")])
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            "it's $HOME `id` \"x\"\nnext"
        );
    }

    #[test]
    fn an_inline_script_runs_with_its_shebang_or_sh() {
        assert_eq!(interpreter("echo hi"), ["/bin/sh"]);
        assert_eq!(interpreter("#!/bin/bash\necho hi"), ["/bin/bash"]);
        assert_eq!(
            interpreter("#! /usr/bin/env python3\nprint(1)"),
            ["/usr/bin/env", "python3"]
        );
        assert_eq!(interpreter("#!\necho"), ["/bin/sh"]);
    }

    #[test]
    fn output_is_chunked_bounded_and_keeps_its_tail() {
        let mut output = Output::default();
        output.push(b"first\nsec");
        output.push(b"ond\r\n");
        assert_eq!(output.take_chunk().as_deref(), Some("first\nsecond"));
        assert_eq!(output.take_chunk(), None);
        for n in 0..10_000 {
            output.push(format!("line {n}\n").as_bytes());
        }
        output.push(b"no newline");
        output.finish();
        let chunk = output.take_chunk().unwrap();
        assert!(chunk.len() <= MAX_REPORTED_BYTES + 100, "{}", chunk.len());
        assert!(chunk.ends_with("is not recorded]"), "{chunk}");
        assert_eq!(output.take_chunk(), None);
        output.push(b"more\n");
        assert_eq!(output.take_chunk(), None, "nothing past the limit");
        assert_eq!(
            output.tail(),
            "last output: line 9997 | line 9998 | line 9999 | no newline | more"
        );
        let mut long = Output::default();
        long.push(&vec![b'x'; MAX_LINE_CHARS * 5]);
        long.finish();
        assert_eq!(long.take_chunk().unwrap().len(), MAX_LINE_CHARS);
    }
}
