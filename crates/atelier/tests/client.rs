//! The client commands of the built binary against a real server (the placeholder runtime,
//! whose start steps take a while): a notebook's life cycle with tables and JSON, errors as
//! ModelArts codes, and the progress stream resumed with `Last-Event-ID` after the server was
//! SIGKILLed mid-start.
// Tests read their switches from the environment and time real processes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_atelier");

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data dir and a config home (for the CLI profile) of the test's own.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn xdg(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }

    /// `atelier serve` with the placeholder runtime; `api` may fix the API address.
    fn serve(&self, api: &str, step_delay: &str) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--api-listen",
                api,
                "--gateway-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(self.data())
            .env("XDG_CONFIG_HOME", self.xdg())
            .env("ATELIER_LOG", "warn")
            .env("ATELIER_RUNTIME__KIND", "placeholder")
            .env("ATELIER_RUNTIME__STEP_DELAY", step_delay)
            // The test script exports the local runtime's image dir, which the placeholder
            // does not take.
            .env_remove("ATELIER_RUNTIME__IMAGE_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("atelier starts");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut listening = false;
        let mut seen = Vec::new();
        while !listening {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "atelier exited before listening: {seen:?}"
            );
            listening = line.starts_with("api listening on ");
            seen.push(line);
        }
        // Keep reading so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = reader.read_to_string(&mut sink);
        });
        Server { child }
    }

    /// Runs a client command of the binary with this home's profile.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("XDG_CONFIG_HOME", self.xdg())
            .env_remove("ATELIER_ENDPOINT")
            .output()
            .expect("atelier runs")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let stdout = self.cli_ok(&all);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Signed headers for one request, from `atelier sign`.
    fn sign(&self, url: &str) -> Vec<(String, String)> {
        let output = Command::new(BIN)
            .args(["sign", url, "--data-dir"])
            .arg(self.data())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn project(&self) -> String {
        let text = std::fs::read_to_string(self.data().join("admin-credentials.json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        json["project_id"].as_str().unwrap().to_owned()
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_cli_runs_a_notebook_life_cycle_with_tables_json_and_clear_errors() {
    let home = Home::new();
    let _server = home.serve("127.0.0.1:0", "100ms");
    // The first start wrote the admin's profile, 0600.
    let profile = home.xdg().join("atelier/config.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let created = home.json(&["notebook", "create", "cli-nb", "--duration", "2h"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "cli-nb");
    home.cli_ok(&["notebook", "wait", "cli-nb", "--timeout", "30s"]);

    let output = home.cli(&["notebook", "stop", "cli-nb", "--wait"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("cli-nb is STOPPED"));

    // start --wait follows the four steps (plain lines when stderr is not a terminal).
    let output = home.cli(&["notebook", "start", "cli-nb", "--wait"]);
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for step in ["1/4 storage", "2/4 compute", "3/4 network", "4/4 init"] {
        assert!(stderr.contains(&format!("[{step}] COMPLETED")), "{stderr}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("cli-nb is RUNNING"), "{stdout}");
    assert!(
        stdout.contains(&format!("http://{id}.localhost:")) && stdout.contains("/lab?token="),
        "{stdout}"
    );

    // Tables by default, JSON on request; names and ids both work.
    let table = home.cli_ok(&["notebook", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("cli-nb") && table.contains("RUNNING"),
        "{table}"
    );
    let shown = home.json(&["notebook", "show", &id]);
    assert_eq!(shown["status"], "RUNNING");
    let link = home.cli_ok(&["notebook", "open", "cli-nb"]);
    assert_eq!(
        link.trim(),
        format!(
            "{}?token={}",
            shown["url"].as_str().unwrap(),
            shown["token"].as_str().unwrap()
        )
    );
    // The lease runs 3 h from now: its duration counts from the lease's start.
    let lease = home.json(&["lease", "renew", "cli-nb", "--duration", "3h"]);
    let duration = lease["duration"].as_i64().unwrap();
    assert!(
        (3 * 3600 * 1000..3 * 3600 * 1000 + 60_000).contains(&duration),
        "{lease}"
    );
    let events = home.json(&["notebook", "events", "cli-nb"]);
    let reasons: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"StopRequested") && reasons.ends_with(&["Running"]),
        "{reasons:?}"
    );
    let flavors = home.json(&["flavor", "list"]);
    assert!(
        flavors
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "modelarts.vm.cpu.2u")
    );

    // Errors: the ModelArts code and message, exit status 1, no backtrace.
    let output = home.cli(&["notebook", "show", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "error: ModelArts.6309: The instance does not exist."
    );
    let output = home.cli(&["--output", "json", "notebook", "start", "cli-nb"]);
    assert_eq!(output.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["error_code"], "ModelArts.6357");
    let output = home.cli(&["notebook", "show", "no-such-name"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no notebook is named `no-such-name`")
    );
    let output = home.cli(&["notebook", "start", "cli-nb", "--duration", "soon"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad duration"));

    home.cli_ok(&["notebook", "stop", "cli-nb", "--wait"]);
    let output = home.cli(&["notebook", "delete", "cli-nb", "--wait"]);
    assert!(output.status.success(), "{}", text(&output));
    let all = home.json(&["notebook", "list"]);
    assert_eq!(all, serde_json::json!([]));

    // Without a profile: a clear message.
    let output = Command::new(BIN)
        .args(["notebook", "list"])
        .env("XDG_CONFIG_HOME", home.dir.path().join("empty"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("run `atelier serve` once"));
}

/// A free TCP port on loopback (for a server restarted on the same address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug)]
struct Frame {
    id: Option<i64>,
    event: String,
    data: Value,
}

/// Reads SSE frames until `end` or `max` frames (or the connection closes).
fn read_frames(reader: &mut impl BufRead, max: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
    let mut line = String::new();
    while frames.len() < max {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !data.is_empty() {
                let frame = Frame {
                    id: id.take(),
                    event: std::mem::replace(&mut event, "message".to_owned()),
                    data: serde_json::from_str(&data).unwrap(),
                };
                data.clear();
                let end = frame.event == "end";
                frames.push(frame);
                if end {
                    break;
                }
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse().unwrap());
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    frames
}

fn open_progress(home: &Home, api: &str, id: &str, last: Option<i64>) -> impl BufRead {
    let url = format!("{api}/v1/{}/notebooks/{id}/progress", home.project());
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut request = client.get(&url);
    for (key, value) in home.sign(&url) {
        request = request.header(key, value);
    }
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let response = request.send().unwrap();
    assert_eq!(response.status(), 200);
    BufReader::new(response)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_progress_stream_resumes_after_a_sigkill_without_gap_or_duplicate() {
    let home = Home::new();
    let api = format!("127.0.0.1:{}", free_port());
    let mut server = home.serve(&api, "400ms");
    // The CLI follows a create; the server dies under it and comes back on the same address.
    let follower = {
        let xdg = home.xdg();
        std::thread::spawn(move || {
            Command::new(BIN)
                .args(["notebook", "create", "resumable", "--wait"])
                .env("XDG_CONFIG_HOME", xdg)
                .output()
                .unwrap()
        })
    };
    let mut id = String::new();
    wait_until("the notebook to exist", || {
        let list = home.json(&["notebook", "list"]);
        match list.as_array().and_then(|l| l.first()) {
            Some(notebook) => {
                id = notebook["id"].as_str().unwrap().to_owned();
                true
            }
            None => false,
        }
    });
    let base = format!("http://{api}");
    let mut stream = open_progress(&home, &base, &id, None);
    let before = read_frames(&mut stream, 4);
    assert_eq!(before.len(), 4, "{before:?}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(500));
    let _server = home.serve(&api, "400ms");

    let last = before.last().unwrap().id.unwrap();
    let mut stream = open_progress(&home, &base, &id, Some(last));
    let after = read_frames(&mut stream, 100);
    let ids: Vec<i64> = before.iter().chain(&after).filter_map(|f| f.id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "a gap or a duplicate: {before:?} {after:?}"
    );
    let end = after.last().unwrap();
    assert_eq!(end.event, "end", "{after:?}");
    assert_eq!(end.data["status"], "RUNNING");

    // The CLI resumed too: every step once, and RUNNING.
    let output = follower.join().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for step in ["1/4 storage", "2/4 compute", "3/4 network", "4/4 init"] {
        let done = format!("[{step}] COMPLETED");
        assert_eq!(stderr.matches(&done).count(), 1, "{done} in {stderr}");
    }
    assert!(String::from_utf8_lossy(&output.stdout).contains("resumable is RUNNING"));
}
