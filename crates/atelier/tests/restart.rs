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

/// A server a test leaves behind (a failed assertion) is killed: its command line names its
/// data dir relatively, so the sandbox cleanup's `pkill -f DIR` would not find it.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let _cleanup = KillOnDrop(dir.path().to_owned());
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

/// A notebook's JupyterLab reached as a non-browser client would, at its own host through the
/// gateway, with the token header.
struct Lab {
    client: reqwest::blocking::Client,
    gateway: std::net::SocketAddr,
    host: String,
    token: String,
}

impl Lab {
    fn of(server: &Server, notebook: &Value) -> Lab {
        let gateway: std::net::SocketAddr = server
            .gateway
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let id = notebook["id"].as_str().unwrap();
        let host = format!("{id}.localhost:{}", gateway.port());
        Lab {
            client: reqwest::blocking::Client::builder()
                .no_proxy()
                .resolve(&format!("{id}.localhost"), gateway)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            gateway,
            host,
            token: notebook["token"].as_str().unwrap().to_owned(),
        }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("http://{}/{path}", self.host))
            .header("Authorization", format!("token {}", self.token))
            .json(&body)
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().unwrap()
    }

    fn status(&self) -> u16 {
        self.client
            .get(format!("http://{}/api/status", self.host))
            .header("Authorization", format!("token {}", self.token))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    fn websocket(&self, path: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
        use tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://{}/{path}", self.host)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("token {}", self.token).parse().unwrap(),
        );
        let tcp = std::net::TcpStream::connect(self.gateway).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        tungstenite::client::client(request, tcp)
            .unwrap_or_else(|e| panic!("websocket {path}: {e}"))
            .0
    }

    /// Sends `code` to the kernel; with `wait`, returns its output once the kernel is idle
    /// again, else returns at once (the kernel goes on running it).
    fn execute(&self, kernel: &str, code: &str, wait: bool) -> String {
        use tungstenite::Message;
        let mut socket = self.websocket(&format!("api/kernels/{kernel}/channels"));
        let msg_id = format!("restart-test-{}", rand_suffix());
        let request = json!({
            "header": {"msg_id": msg_id, "username": "test", "session": format!("s-{msg_id}"),
                       "msg_type": "execute_request", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": false, "store_history": false,
                        "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}
        });
        socket.send(Message::text(request.to_string())).unwrap();
        let mut output = String::new();
        let mut started = false;
        loop {
            let Ok(Message::Text(text)) = socket.read() else {
                break;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["parent_header"]["msg_id"] != msg_id.as_str() {
                continue;
            }
            match (
                message["msg_type"].as_str(),
                message["content"]["execution_state"].as_str(),
            ) {
                (Some("status"), Some("busy")) => {
                    started = true;
                    if !wait {
                        break;
                    }
                }
                (Some("stream"), _) => {
                    output.push_str(message["content"]["text"].as_str().unwrap_or(""))
                }
                (Some("error"), _) => {
                    output.push_str(&format!("ERROR {}", message["content"]["evalue"]))
                }
                (Some("status"), Some("idle")) => break,
                _ => {}
            }
        }
        assert!(started, "the kernel never took {code:?}");
        let _ = socket.close(None);
        output
    }

    /// Types `command` into a new terminal; returns once its output settled.
    fn terminal(&self, command: &str) -> String {
        use tungstenite::Message;
        let created = self.post("api/terminals", json!({}));
        let name = created["name"].as_str().unwrap();
        let mut socket = self.websocket(&format!("terminals/websocket/{name}"));
        let marker = "__done__";
        // Typed once the shell has shown its prompt, as a person would: a shell still
        // starting may throw typed-ahead input away.
        let mut output = String::new();
        while output.is_empty() {
            let Ok(Message::Text(text)) = socket.read() else {
                break;
            };
            let message: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if message[0] == "stdout" {
                output.push_str(message[1].as_str().unwrap_or(""));
            }
        }
        socket
            .send(Message::text(
                json!(["stdin", format!("{command}; echo {marker}\r")]).to_string(),
            ))
            .unwrap();
        // The marker shows twice: typed (echoed) and printed.
        while output.matches(marker).count() < 2 {
            let Ok(Message::Text(text)) = socket.read() else {
                break;
            };
            let message: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if message[0] == "stdout" {
                output.push_str(message[1].as_str().unwrap_or(""));
            }
        }
        let _ = socket.close(None);
        output
    }
}

/// Should the test fail, kills the server and sandboxes it left under the directory and
/// unmounts their volumes, before the temporary directory is removed (which would otherwise
/// walk into the mounted volumes and leave the processes running).
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = self.0.display().to_string();
        let _ = Command::new("pkill").args(["-KILL", "-f", &dir]).status();
        std::thread::sleep(Duration::from_millis(500));
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A kernel program that writes `lines` numbered lines to `name` in the work dir, each
/// flushed and fsynced, 10 ms apart, then writes the count to `name.done`.
fn writer(name: &str, lines: u32) -> String {
    format!(
        "import os, time, traceback\n\
         try:\n    \
             with open('{name}', 'w') as f:\n        \
                 for i in range({lines}):\n            \
                     f.write(f'{{i:08d}}\\n'); f.flush(); os.fsync(f.fileno()); time.sleep(0.01)\n    \
             with open('{name}.done', 'w') as f:\n        \
                 f.write('{lines}')\n\
         except BaseException:\n    \
             open('/tmp/{name}.error', 'w').write(traceback.format_exc())\n    \
             raise\n"
    )
}

/// Waits for the writer to finish and checks every line arrived, in order, in the volume on
/// the host.
fn every_line_arrived(volume: &Path, name: &str, lines: u32) {
    let done = volume.join(format!("{name}.done"));
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "{name}: the kernel never finished writing (it has {} bytes)",
            std::fs::metadata(volume.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(volume.join(name)).unwrap();
    let expected: String = (0..lines).map(|i| format!("{i:08}\n")).collect();
    assert_eq!(
        text.len(),
        expected.len(),
        "{name}: bytes in the volume on the host"
    );
    assert!(text == expected, "{name}: lines out of order or damaged");
}

fn lines_written(volume: &Path, name: &str) -> usize {
    std::fs::read_to_string(volume.join(name))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_warm_claimed_notebook_keeps_writing_kernels_terminals_and_ssh_through_restarts() {
    let missing = prerequisites_missing();
    if !missing.is_empty() || !Path::new("/usr/bin/ssh").exists() {
        assert!(
            std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").as_deref() != Ok("1"),
            "the local runtime needs {} and ssh",
            missing.join(", ")
        );
        eprintln!(
            "skipping: the local runtime needs {} and ssh",
            missing.join(", ")
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data = dir.path().join("data");
    let _cleanup = KillOnDrop(dir.path().to_owned());
    let mut server = serve(&data);
    let project = serde_json::from_str::<Value>(
        &std::fs::read_to_string(data.join("admin-credentials.json")).unwrap(),
    )
    .unwrap()["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = Api::new(&server, &data, &project);
    let (status, keypair) = {
        let response = api
            .client
            .post(format!("{}/v1/{project}/keypairs", server.api))
            .header("X-Auth-Token", &api.token)
            .json(&json!({"keypair": {"name": "laptop"}}))
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    assert_eq!(status, 200, "{keypair}");
    let key_file = dir.path().join("laptop.key");
    std::fs::write(
        &key_file,
        keypair["keypair"]["private_key"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let body = |name: &str| {
        json!({"name": name, "flavor": "modelarts.vm.cpu.2u", "image_id": "e1a07296-22a8-4f05-8bc8-e936c8e54090",
               "volume": {"category": "EFS", "ownership": "MANAGED"}, "duration": -1,
               "endpoints": [{"service": "SSH", "key_pair_names": ["laptop"],
                              "allowed_access_ips": ["127.0.0.1"]}]})
    };
    let wait_running = |api: &Api, id: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let notebook = api.show(id);
            match notebook["status"].as_str() {
                Some("RUNNING") => return notebook,
                Some("CREATE_FAILED" | "START_FAILED" | "ERROR") => panic!("{notebook}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "never RUNNING: {notebook}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // A cold start fills the warm pool for its image and flavor; the next notebook claims it.
    let (status, cold) = api.call(reqwest::Method::POST, "", Some(body("cold")));
    assert_eq!(status, 200, "{cold}");
    let cold_id = cold["id"].as_str().unwrap().to_owned();
    let cold = wait_running(&api, &cold_id);
    let deadline = Instant::now() + Duration::from_secs(300);
    // Ready, not just started: `/metrics` counts the idle warm sandboxes that can be claimed.
    let ready_warm = |server: &Server| -> f64 {
        let text = reqwest::blocking::get(format!("{}/metrics", server.api))
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("atelier_warm_pool_sandboxes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    while ready_warm(&server) < 1.0 {
        assert!(Instant::now() < deadline, "the warm pool never filled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, warm) = api.call(reqwest::Method::POST, "", Some(body("warm")));
    assert_eq!(status, 200, "{warm}");
    let id = warm["id"].as_str().unwrap().to_owned();
    let warm = wait_running(&api, &id);
    assert!(
        data.join("run").join(&id).join("slot").exists(),
        "the second notebook came from the warm pool"
    );
    let volume = data.join("volumes").join(&id);
    let mut lab = Lab::of(&server, &warm);
    let kernel = lab.post("api/kernels", json!({"name": "python3"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Through a SIGKILL and then a SIGTERM of the server, the kernel keeps writing; each
    // restart happens mid-stream.
    let ssh_port = |notebook: &Value| -> u16 {
        let uri = notebook["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["service"] == "SSH")
            .and_then(|e| e["uri"].as_str())
            .unwrap_or_else(|| panic!("no SSH endpoint: {notebook}"));
        uri.rsplit(':').next().unwrap().parse().unwrap()
    };
    let port = ssh_port(&warm);
    for (round, signal_name) in ["-KILL", "-TERM"].into_iter().enumerate() {
        let name = format!("stream-{round}.txt");
        let lines = 1500;
        lab.execute(&kernel, &writer(&name, lines), false);
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines_written(&volume, &name) < 100 {
            if Instant::now() > deadline {
                // What stopped the writer, if it stopped: its traceback, kept in the
                // sandbox's /tmp (the work volume may be what failed).
                let seen = lab.execute(
                    &kernel,
                    &format!(
                        "import os; print(os.getcwd(), sorted(os.listdir('.'))); \
                         e = '/tmp/{name}.error'; print(open(e).read() if os.path.exists(e) \
                         else 'no error recorded')"
                    ),
                    true,
                );
                panic!(
                    "{name}: the kernel is not writing; the kernel sees {seen}; the host's \
                     volume has {:?}",
                    std::fs::read_dir(&volume)
                        .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(&mut server, signal_name);
        server = serve(&data);
        assert!(
            lines_written(&volume, &name) < lines as usize,
            "{name}: the restart happened while the kernel was writing"
        );
        let api = Api {
            base: format!("{}/v1/{project}/notebooks", server.api),
            client: api.client.clone(),
            token: api.token.clone(),
        };
        let after = api.show(&id);
        assert_eq!(after["status"], "RUNNING", "{after}");
        assert_eq!(
            after["token"], warm["token"],
            "the same JupyterLab, the same token"
        );
        assert_eq!(ssh_port(&after), port);
        every_line_arrived(&volume, &name, lines);

        // The same kernel still runs code, a new terminal works in the work dir, SSH logs in
        // to the same sandbox, and the cold-started neighbour is untouched.
        lab = Lab::of(&server, &warm);
        assert_eq!(lab.status(), 200, "after {signal_name}");
        let output = lab.execute(
            &kernel,
            &format!("print(open('{name}.done').read(), 6 * 7)"),
            true,
        );
        assert_eq!(output.trim(), format!("{lines} 42"), "after {signal_name}");
        let marker = format!("terminal-{round}");
        let typed = lab.terminal(&format!("echo {marker} > {marker}.txt"));
        assert_eq!(
            std::fs::read_to_string(volume.join(format!("{marker}.txt")))
                .unwrap_or_default()
                .trim(),
            marker,
            "after {signal_name}; the terminal said {typed:?}"
        );
        let ssh = Command::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&key_file)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-p",
                &port.to_string(),
                "ma-user@127.0.0.1",
                &format!("cat ~/{name}.done"),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ssh.stdout).trim(),
            lines.to_string(),
            "ssh after {signal_name}: {}",
            String::from_utf8_lossy(&ssh.stderr)
        );
        assert_eq!(Lab::of(&server, &cold).status(), 200, "after {signal_name}");
    }

    let api = Api {
        base: format!("{}/v1/{project}/notebooks", server.api),
        ..api
    };
    for notebook in [&id, &cold_id] {
        api.call(reqwest::Method::DELETE, &format!("/{notebook}"), None);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sandboxes(&data).is_empty() {
        assert!(Instant::now() < deadline, "delete left sandboxes behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&mut server, "-TERM");
}
