//! The `atelier` binary as a user runs it: first start, flags and environment, graceful
//! shutdown on SIGTERM, offline administration, configuration errors.
// Tests read their switches from the environment and time real processes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_atelier");

struct Server {
    child: Child,
    api: String,
    gateway: String,
    stdout: Vec<String>,
}

/// `atelier serve` on port 0 with `data_dir`.
fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--api-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// Starts `atelier serve` on port 0 and reads its stdout up to the gateway line.
fn serve(data_dir: &Path, envs: &[(&str, &str)]) -> Server {
    let mut command = serve_command(data_dir);
    // The CLI profile the first start writes goes to the test's dir, not ~/.config.
    command.env("XDG_CONFIG_HOME", data_dir.join("xdg"));
    for (key, value) in envs {
        command.env(key, value);
    }
    spawn_server(command)
}

/// Spawns a prepared `atelier serve` and reads its stdout up to the gateway line.
fn spawn_server(mut command: Command) -> Server {
    command
        .env("ATELIER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("atelier starts");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut api, mut gateway, mut stdout) = (String::new(), String::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.is_empty() && Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read stdout") == 0 {
            break;
        }
        let line = line.trim_end().to_owned();
        if let Some(address) = line.strip_prefix("api listening on ") {
            api = address.to_owned();
        }
        if let Some(address) = line.strip_prefix("gateway listening on ") {
            gateway = address.to_owned();
        }
        stdout.push(line);
    }
    assert!(
        !api.is_empty() && !gateway.is_empty(),
        "no listening lines in {stdout:?}"
    );
    Server {
        child,
        api,
        gateway,
        stdout,
    }
}

fn terminate(mut server: Server) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "atelier did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn atelier(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("atelier runs")
}

#[test]
fn first_start_bootstraps_identity_and_sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let path = dir.path().join("admin-credentials.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials must be private");
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let project = creds["project_id"].as_str().unwrap();
    assert_eq!(project.len(), 32);
    assert!(
        project
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(creds["endpoint"].as_str().unwrap(), server.api);
    assert!(creds["secret_key"].as_str().unwrap().len() >= 32);
    // The secret is printed once, on this first start.
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains(creds["secret_key"].as_str().unwrap()))
    );
    // The API answers (unauthenticated → 401 with a request id); the gateway listens.
    let response =
        reqwest::blocking::get(format!("{}/v1/{project}/notebooks", server.api)).unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"].len(), 32);
    assert!(reqwest::blocking::get(format!("{}/x/lab", server.gateway)).is_ok());
    let status = terminate(server);
    assert!(status.success(), "graceful exit, got {status:?}");

    // A second start keeps the identity and does not print the secret again.
    let again = serve(dir.path(), &[]);
    assert!(
        !again
            .stdout
            .iter()
            .any(|l| l.contains(creds["secret_key"].as_str().unwrap()))
    );
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(after["access_key"], creds["access_key"]);
    assert!(terminate(again).success());
}

#[test]
fn a_new_data_dir_on_the_same_endpoint_renews_the_default_profile_and_another_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    let profiles = || -> toml::Table {
        toml::from_str(&std::fs::read_to_string(xdg.join("atelier/config.toml")).unwrap()).unwrap()
    };
    let access_key = |data: &str| -> String {
        let creds: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(data).join("admin-credentials.json")).unwrap(),
        )
        .unwrap();
        creds["access_key"].as_str().unwrap().to_owned()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = |data: &str, api: &str| {
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--gateway-listen",
                "127.0.0.1:0",
                "--api-listen",
                api,
            ])
            .arg("--data-dir")
            .arg(dir.path().join(data))
            .env("XDG_CONFIG_HOME", &xdg);
        let server = spawn_server(command);
        let said = server.stdout.join("\n");
        assert!(terminate(server).success());
        said
    };
    let first = start("a", &format!("127.0.0.1:{port}"));
    assert!(first.contains("CLI profile `default` written"), "{first}");
    assert_eq!(
        profiles()["default"]["access_key"].as_str(),
        Some(access_key("a").as_str())
    );
    // The data dir was wiped and the server started again at the same address: the old keys
    // cannot work there, so the profile follows the new ones.
    let second = start("b", &format!("127.0.0.1:{port}"));
    assert!(second.contains("replaced"), "{second}");
    assert_eq!(
        profiles()["default"]["access_key"].as_str(),
        Some(access_key("b").as_str())
    );
    // A second server at another address does not take the user's default.
    let third = start("c", "127.0.0.1:0");
    assert!(third.contains("left as it is"), "{third}");
    assert_eq!(
        profiles()["default"]["access_key"].as_str(),
        Some(access_key("b").as_str())
    );
}

#[test]
fn bootstrap_values_can_be_fixed_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &[
            (
                "ATELIER_BOOTSTRAP_PROJECT_ID",
                "0123456789abcdef0123456789abcdef",
            ),
            ("ATELIER_BOOTSTRAP_ACCESS_KEY", "AKTESTEXAMPLE0000001"),
            (
                "ATELIER_BOOTSTRAP_SECRET_KEY",
                "SKtestExampleSecretKey0000000000000000001",
            ),
        ],
    );
    let creds: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("admin-credentials.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(creds["project_id"], "0123456789abcdef0123456789abcdef");
    assert_eq!(creds["access_key"], "AKTESTEXAMPLE0000001");
    assert_eq!(
        creds["secret_key"],
        "SKtestExampleSecretKey0000000000000000001"
    );
    assert!(terminate(server).success());
}

#[test]
fn offline_administration_manages_projects_credentials_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    assert!(terminate(server).success());

    let created = atelier(
        dir.path(),
        &["project", "create", "research", "--user", "alice"],
    );
    assert!(created.status.success(), "{created:?}");
    let listed = String::from_utf8(atelier(dir.path(), &["project", "list"]).stdout).unwrap();
    assert!(
        listed.contains("default") && listed.contains("research"),
        "{listed}"
    );

    let credential = atelier(
        dir.path(),
        &[
            "credential",
            "create",
            "--user",
            "alice",
            "--project",
            "research",
        ],
    );
    assert!(credential.status.success(), "{credential:?}");
    let credential: serde_json::Value = serde_json::from_slice(&credential.stdout).unwrap();
    let access_key = credential["access_key"].as_str().unwrap().to_owned();
    let listed = String::from_utf8(atelier(dir.path(), &["credential", "list"]).stdout).unwrap();
    assert!(
        listed.contains(&access_key) && listed.contains("alice"),
        "{listed}"
    );
    assert!(
        !listed.contains(credential["secret_key"].as_str().unwrap()),
        "secrets are never listed"
    );
    assert!(
        atelier(dir.path(), &["credential", "delete", &access_key])
            .status
            .success()
    );
    assert!(
        !atelier(dir.path(), &["credential", "delete", &access_key])
            .status
            .success()
    );

    let token = atelier(
        dir.path(),
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--project",
            "research",
        ],
    );
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    // The token works against a server on the same data dir, for its project only.
    let server = serve(dir.path(), &[]);
    let projects = String::from_utf8(atelier(dir.path(), &["project", "list"]).stdout).unwrap();
    let research = projects
        .lines()
        .find(|l| l.ends_with("research"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let default = projects
        .lines()
        .find(|l| l.ends_with("default"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let client = reqwest::blocking::Client::new();
    let ok = client
        .get(format!("{}/v1/{research}/notebooks", server.api))
        .header("X-Auth-Token", &token)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let other = client
        .get(format!("{}/v1/{default}/notebooks", server.api))
        .header("X-Auth-Token", &token)
        .send()
        .unwrap();
    assert_eq!(other.status(), 403);
    let body: serde_json::Value = other.json().unwrap();
    assert_eq!(body["error_code"], "ModelArts.0210");
    assert!(terminate(server).success());
}

#[test]
fn flags_win_over_environment_and_bad_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["config", "check", "--data-dir"])
        .arg(dir.path())
        .env("ATELIER_DATA_DIR", "/nonexistent/from-env")
        .env("ATELIER_API_LISTEN", "127.0.0.1:9999")
        .env("ATELIER_AUTH__MAX_CLOCK_SKEW", "5m")
        .env(
            "ATELIER_BOOTSTRAP_SECRET_KEY",
            "a-secret-that-must-not-show",
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains(&dir.path().display().to_string()),
        "flag wins: {text}"
    );
    assert!(text.contains("127.0.0.1:9999"), "env applies: {text}");
    assert!(text.contains("5m"), "nested env applies: {text}");
    assert!(
        !text.contains("a-secret-that-must-not-show"),
        "secrets are redacted: {text}"
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "api_listen = \"not an address\"\n").unwrap();
    let output = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    std::fs::write(&config, "surprise = 1\n").unwrap();
    let output = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(64),
        "unknown keys are refused: {output:?}"
    );
    let busy_poll = |micros: &str| {
        Command::new(BIN)
            .args(["config", "check"])
            .env("ATELIER_GATEWAY_BUSY_POLL_US", micros)
            .output()
            .unwrap()
    };
    let output = busy_poll("250000");
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("gateway_busy_poll_us"),
        "{output:?}"
    );
    // Off by default; an opt-in window is taken.
    let output = busy_poll("1000");
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("gateway_busy_poll_us = 1000"),
        "{output:?}"
    );
}

#[test]
fn a_host_without_what_sandboxes_need_is_told_at_boot_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let serve_with = |data: &Path, path: &str| {
        serve_command(data)
            .env("PATH", path)
            .env("ATELIER_RUNTIME__KIND", "local")
            .env("XDG_CONFIG_HOME", dir.path().join("xdg"))
            .stdin(Stdio::null())
            .output()
            .expect("atelier runs")
    };
    // Nothing on PATH: every tool is named with the package that brings it, before any
    // notebook could fail its start on it.
    let output = serve_with(&dir.path().join("data"), "/nonexistent");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needed in [
        "apt-get install bubblewrap",
        "apt-get install slirp4netns",
        "apt-get install nftables",
        "apt-get install e2fsprogs",
    ] {
        assert!(stderr.contains(needed), "{needed}: {stderr}");
    }
    // A data dir the notebooks' uids cannot pass through is named, with the fix.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let output = serve_with(
        &private.join("data"),
        &std::env::var("PATH").unwrap_or_default(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&private.display().to_string()) && stderr.contains("chmod o+x"),
        "{stderr}"
    );
}
