//! Restart safety with real sandboxes: SIGKILL `atelier serve` while notebooks start, start it
//! again, and every notebook ends RUNNING (or failed with a reason) with exactly one sandbox
//! each; a graceful restart keeps running notebooks reachable with the same token.
//! Needs root, bubblewrap, cgroups and python3-venv (see `crates/server/tests/it/local.rs`).
// Tests read their switches from the environment and time real processes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_atelier");

fn prerequisites_missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        missing.push("root");
    }
    if !Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("bubblewrap");
    }
    if !(Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists())
    {
        missing.push("cgroups");
    }
    if !Command::new("/usr/bin/python3")
        .args(["-c", "import venv, ensurepip"])
        .status()
        .is_ok_and(|s| s.success())
    {
        missing.push("python3-venv");
    }
    missing
}

struct Server {
    child: Child,
    api: String,
    gateway: String,
}

fn serve(data_dir: &Path) -> Server {
    let image_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("atelier-images");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--api-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir.file_name().unwrap())
        // A relative data dir, as the default `./atelier-data` is: sandbox paths must not be.
        .current_dir(data_dir.parent().unwrap())
        .env("ATELIER_LOG", "info")
        // The CLI profile the first start writes goes to the test's dir, not ~/.config.
        .env("XDG_CONFIG_HOME", data_dir.join("xdg"))
        .env("ATELIER_RUNTIME__KIND", "local")
        .env("ATELIER_RUNTIME__IMAGE_DIR", image_dir)
        .stdout(Stdio::piped())
        // Kept beside the data dir: what the server said, should the test fail.
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.with_extension("log"))
                .expect("log file"),
        )
        .spawn()
        .expect("atelier starts");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let (mut api, mut gateway) = (String::new(), String::new());
    while gateway.is_empty() {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "atelier exited before listening"
        );
        if let Some(a) = line.trim().strip_prefix("api listening on ") {
            api = a.to_owned();
        }
        if let Some(g) = line.trim().strip_prefix("gateway listening on ") {
            gateway = g.to_owned();
        }
    }
    Server {
        child,
        api,
        gateway,
    }
}

fn signal(server: &mut Server, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &server.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "atelier did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Notebook ids of the bwrap sandboxes running for this data dir.
fn sandboxes(data_dir: &Path) -> Vec<String> {
    all_sandboxes(data_dir)
        .into_iter()
        .filter(|name| !name.starts_with("pool-"))
        .collect()
}

/// Idle warm sandboxes (`run/pool-*`) running for this data dir.
fn warm_sandboxes(data_dir: &Path) -> Vec<String> {
    all_sandboxes(data_dir)
        .into_iter()
        .filter(|name| name.starts_with("pool-"))
        .collect()
}

fn all_sandboxes(data_dir: &Path) -> Vec<String> {
    // A sandbox binds its notebook's SSH dir (`DATA/ssh/{id}`) or, warm, its slot's
    // (`DATA/pool/{slot}/ssh`); bwrap forks once inside its namespaces, so one sandbox shows
    // as two processes.
    let markers = [
        format!("{}/ssh/", data_dir.display()),
        format!("{}/pool/", data_dir.display()),
    ];
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with("bwrap")) {
            continue;
        }
        if let Some(name) = args
            .iter()
            .filter_map(|a| markers.iter().find_map(|m| a.strip_prefix(m.as_str())))
            .map(|rest| rest.trim_end_matches("/ssh"))
            .find(|name| !name.contains('/'))
        {
            ids.push(name.to_owned());
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

struct Api {
    client: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(server: &Server, data_dir: &Path, project: &str) -> Api {
        let output = Command::new(BIN)
            .args(["token", "create", "--data-dir"])
            .arg(data_dir)
            .output()
            .unwrap();
        assert!(output.status.success());
        Api {
            client: reqwest::blocking::Client::builder()
                .no_proxy()
                .build()
                .unwrap(),
            base: format!("{}/v1/{project}/notebooks", server.api),
            token: String::from_utf8(output.stdout).unwrap().trim().to_owned(),
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn show(&self, id: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/{id}"), None).1
    }
}

#[test]
fn sigkill_during_starts_leaves_every_notebook_settled_and_no_orphan_sandbox() {
    let missing = prerequisites_missing();
    if !missing.is_empty() {
        assert!(
            std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").as_deref() != Ok("1"),
            "the local runtime needs {}",
            missing.join(", ")
        );
        eprintln!("skipping: the local runtime needs {}", missing.join(", "));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The notebooks' uids must be able to pass through the data dir's parents.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data);
    let project = serde_json::from_str::<Value>(
        &std::fs::read_to_string(data.join("admin-credentials.json")).unwrap(),
    )
    .unwrap()["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = Api::new(&server, &data, &project);
    let body = |name: &str| {
        json!({"name": name, "flavor": "modelarts.vm.cpu.2u", "image_id": "e1a07296-22a8-4f05-8bc8-e936c8e54090",
               "volume": {"category": "EFS", "ownership": "MANAGED"}, "duration": -1})
    };
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let (status, created) =
                api.call(reqwest::Method::POST, "", Some(body(&format!("k{i}"))));
            assert_eq!(status, 200, "{created}");
            created["id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Kill the server once the first sandbox exists, while the starts are in flight.
    let deadline = Instant::now() + Duration::from_secs(600);
    while sandboxes(&data).is_empty() {
        assert!(Instant::now() < deadline, "no sandbox ever started");
        let failed = ids
            .iter()
            .map(|id| api.show(id))
            .find(|nb| nb["status"] == "CREATE_FAILED");
        assert!(
            failed.is_none(),
            "a start failed before the kill: {failed:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&mut server, "-KILL");

    let mut server = serve(&data);
    let api = Api {
        base: format!("{}/v1/{project}/notebooks", server.api),
        ..api
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let settled: Vec<Value> = loop {
        let notebooks: Vec<Value> = ids.iter().map(|id| api.show(id)).collect();
        let done = notebooks.iter().all(|nb| {
            matches!(
                nb["status"].as_str(),
                Some("RUNNING" | "START_FAILED" | "CREATE_FAILED" | "ERROR")
            )
        });
        if done {
            break notebooks;
        }
        assert!(Instant::now() < deadline, "not settled: {notebooks:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut running: Vec<String> = Vec::new();
    for notebook in &settled {
        if notebook["status"] == "RUNNING" {
            running.push(notebook["id"].as_str().unwrap().to_owned());
        } else {
            assert!(
                !notebook["fail_reason"].as_str().unwrap_or("").is_empty(),
                "a failure names its reason: {notebook}"
            );
        }
    }
    running.sort();
    assert_eq!(
        sandboxes(&data),
        running,
        "exactly one sandbox per running notebook: {settled:?}"
    );
    // The killed server's warm sandbox was reaped at boot; at most the new one is idle.
    let warm = warm_sandboxes(&data);
    assert!(warm.len() <= 1, "warm sandboxes: {warm:?}");

    // A graceful restart keeps running notebooks reachable with the same token.
    let tokens: Vec<(String, String)> = settled
        .iter()
        .filter(|nb| nb["status"] == "RUNNING")
        .map(|nb| {
            (
                nb["id"].as_str().unwrap().to_owned(),
                nb["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    signal(&mut server, "-TERM");
    let mut server = serve(&data);
    let api = Api {
        base: format!("{}/v1/{project}/notebooks", server.api),
        ..api
    };
    for (id, token) in &tokens {
        assert_eq!(api.show(id)["status"], "RUNNING");
        let status = api
            .client
            .get(format!("{}/api/status?token={token}", server.gateway))
            // The notebook's own host, `{id}.localhost:PORT`, as a browser names it.
            .header(
                "host",
                format!(
                    "{id}.{}",
                    server.gateway.replace("http://127.0.0.1", "localhost")
                ),
            )
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 200, "{id} is reachable after the restart");
    }
    assert_eq!(sandboxes(&data), running);

    for id in &ids {
        api.call(reqwest::Method::DELETE, &format!("/{id}"), None);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sandboxes(&data).is_empty()
        || ids
            .iter()
            .any(|id| api.call(reqwest::Method::GET, &format!("/{id}"), None).0 != 404)
    {
        assert!(Instant::now() < deadline, "delete left sandboxes behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&mut server, "-TERM");
}
