//! `/v1/{project}/keypairs` (an Atelier extension) and SSH endpoints. The key-pair API and
//! endpoint validation run on the placeholder runtime; the SSH logins use the real local
//! runtime, OpenSSH's `sshd` in the sandbox and the real `ssh`/`sftp` clients.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::local::{FIRST_START, Lab, local_runtime_available};
use crate::support::{PROJECT_ID, SdkStyle, TestApp, expect_error, id_of, json_of, notebook_body};

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa66lDBVQ3CEG+8xQYQZvr1UOYEzGGK5lhX422idrJF me@host";
const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDTEqE3CybytbMA4EPnrPAcfEQhUXEN9Giy1aBpopgThMnzrw+q/j8LaVG0iRZtgTlcxOL866kfMbb++H4WXiBql5KNMx2GUXwHo7t7gg3jb8NA8br4XlwtePNe14CB97PxBFPTTwr9mJZs8nj12FeIMAzLpkdVfZN4oingZWjzYQ== small";

fn keypairs_path() -> String {
    format!("/v1/{PROJECT_ID}/keypairs")
}

async fn create_keypair(app: &TestApp, name: &str, public_key: Option<&str>) -> Value {
    let mut keypair = json!({"name": name});
    if let Some(key) = public_key {
        keypair["public_key"] = json!(key);
    }
    let body = json!({"keypair": keypair}).to_string();
    let (status, json) = json_of(app.signed("POST", &keypairs_path(), Some(&body)).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["keypair"].clone()
}

fn ssh_body(name: &str, keys: &[&str], ips: &[&str]) -> Value {
    let mut body = notebook_body(name);
    body["endpoints"] =
        json!([{"service": "SSH", "key_pair_names": keys, "allowed_access_ips": ips}]);
    body
}

#[tokio::test]
async fn key_pairs_are_registered_generated_listed_and_deleted() {
    let app = TestApp::spawn().await;
    let registered = create_keypair(&app, "laptop", Some(ED25519)).await;
    assert_eq!(registered["public_key"], ED25519);
    assert_eq!(registered["algorithm"], "ssh-ed25519");
    assert_eq!(registered["type"], "ssh");
    assert!(
        registered["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    assert!(registered.get("private_key").is_none(), "{registered}");

    // Without a public key Atelier makes a pair and returns the private half once.
    let generated = create_keypair(&app, "made-here", None).await;
    let private = generated["private_key"].as_str().unwrap();
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert!(
        generated["public_key"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );

    let (status, shown) = json_of(
        app.signed("GET", &format!("{}/made-here", keypairs_path()), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["keypair"]["public_key"], generated["public_key"]);
    assert!(shown["keypair"].get("private_key").is_none(), "{shown}");

    let (_, list) = json_of(app.signed("GET", &keypairs_path(), None).await).await;
    let names: Vec<&str> = list["keypairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keypair"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["laptop", "made-here"]);
    assert_eq!(list["total"], 2);

    // Another project neither sees nor can delete them, and may reuse the name.
    let (project, ak, sk) = app.second_tenant().await;
    let theirs = format!("/v1/{project}/keypairs");
    let (_, their_list) = json_of(
        app.signed_with(SdkStyle::Python, "GET", &theirs, None, &ak, &sk)
            .await,
    )
    .await;
    assert_eq!(their_list["total"], 0, "{their_list}");
    let body = json!({"keypair": {"name": "laptop", "public_key": ED25519}}).to_string();
    let response = app
        .signed_with(SdkStyle::Python, "POST", &theirs, Some(&body), &ak, &sk)
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let delete = app
        .signed("DELETE", &format!("{}/laptop", keypairs_path()), None)
        .await;
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.signed("DELETE", &format!("{}/laptop", keypairs_path()), None)
            .await,
        404,
        "ModelArts.6404",
    )
    .await;
    expect_error(
        app.signed("GET", &format!("{}/laptop", keypairs_path()), None)
            .await,
        404,
        "ModelArts.6404",
    )
    .await;
}

#[tokio::test]
async fn bad_key_pairs_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"keypair": {"name": "k", "public_key": "ssh-ed25519 AAAAnot-a-key"}}),
            "ModelArts.6336",
        ),
        (
            json!({"keypair": {"name": "k", "public_key": RSA_1024}}),
            "ModelArts.6336",
        ),
        (
            json!({"keypair": {"name": "k", "public_key": format!("{ED25519}\n{ED25519}")}}),
            "ModelArts.6336",
        ),
        (
            json!({"keypair": {"name": "bad name", "public_key": ED25519}}),
            "ModelArts.6336",
        ),
        (
            json!({"keypair": {"public_key": ED25519}}),
            "ModelArts.6335",
        ),
    ];
    for (body, code) in cases {
        let response = app
            .signed("POST", &keypairs_path(), Some(&body.to_string()))
            .await;
        let error = expect_error(response, 400, code).await;
        if body["keypair"]["public_key"] == RSA_1024 {
            assert!(
                error["error_msg"].as_str().unwrap().contains("2048"),
                "{error}"
            );
        }
    }
    let (_, list) = json_of(app.signed("GET", &keypairs_path(), None).await).await;
    assert_eq!(list["total"], 0);

    create_keypair(&app, "k", Some(ED25519)).await;
    let again = json!({"keypair": {"name": "k", "public_key": ED25519}}).to_string();
    expect_error(
        app.signed("POST", &keypairs_path(), Some(&again)).await,
        400,
        "ModelArts.6301",
    )
    .await;
}

#[tokio::test]
async fn bad_ssh_endpoints_are_refused_and_create_nothing() {
    let app = TestApp::spawn().await;
    create_keypair(&app, "mine", Some(ED25519)).await;
    let six: Vec<String> = (1..=6).map(|i| format!("192.0.2.{i}")).collect();
    let six: Vec<&str> = six.iter().map(String::as_str).collect();
    let cases = [
        (ssh_body("a", &["nobody-has-this"], &[]), "ModelArts.6789"),
        (ssh_body("b", &["mine"], &["300.1.2.3"]), "ModelArts.6336"),
        (ssh_body("c", &["mine"], &["10.0.0.0/33"]), "ModelArts.6336"),
        (ssh_body("d", &["mine"], &six), "ModelArts.6336"),
    ];
    for (body, code) in cases {
        let response = app
            .signed("POST", &app.notebooks_path(), Some(&body.to_string()))
            .await;
        let error = expect_error(response, 400, code).await;
        if code == "ModelArts.6789" {
            assert!(
                error["error_msg"]
                    .as_str()
                    .unwrap()
                    .contains("nobody-has-this"),
                "{error}"
            );
        }
    }
    let mut twice = ssh_body("e", &["mine"], &[]);
    twice["endpoints"] = json!([{"service": "SSH", "key_pair_names": ["mine"]}, {"dev_service": "SSH", "ssh_keys": ["mine"]}]);
    expect_error(
        app.signed("POST", &app.notebooks_path(), Some(&twice.to_string()))
            .await,
        400,
        "ModelArts.6336",
    )
    .await;
    assert_eq!(app.notebook_count().await, 0);

    // The older spelling works; Update with an unknown key pair changes nothing.
    let mut old = notebook_body("old-spelling");
    old["endpoints"] = json!([{"dev_service": "SSH", "ssh_keys": ["mine"], "allowed_access_ips": ["203.0.113.7"]}]);
    let created = app.create_notebook(&old).await;
    let id = id_of(&created).to_owned();
    let shown = app.show_ok(&id).await;
    let ssh = shown["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == "SSH")
        .cloned()
        .unwrap_or_else(|| panic!("no SSH endpoint: {shown}"));
    assert_eq!(ssh["key_pair_names"], json!(["mine"]));
    assert_eq!(ssh["ssh_keys"], json!(["mine"]));
    assert_eq!(ssh["allowed_access_ips"], json!(["203.0.113.7"]));
    let update = json!({"endpoints": [{"service": "SSH", "key_pair_names": ["gone"]}]});
    expect_error(
        app.signed("PUT", &app.notebook_path(&id), Some(&update.to_string()))
            .await,
        400,
        "ModelArts.6789",
    )
    .await;
    let after = app.show_ok(&id).await;
    let ssh_after = after["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == "SSH")
        .cloned();
    assert_eq!(ssh_after, Some(ssh));
}

// ---------------------------------------------------------------------------------------------
// Real SSH
// ---------------------------------------------------------------------------------------------

/// The OpenSSH pieces the real tests need (`.ci/run` installs them).
fn ssh_available(test: &str) -> bool {
    let missing: Vec<&str> = [
        "/usr/sbin/sshd",
        "/usr/bin/ssh",
        "/usr/bin/sftp",
        "/usr/bin/nsenter",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: missing {}", missing.join(", "));
    eprintln!("skipping {test}: missing {}", missing.join(", "));
    false
}

struct Client {
    dir: tempfile::TempDir,
    port: u16,
}

impl Client {
    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_key(&self, name: &str, private: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.key(name);
        std::fs::write(&path, private).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Options common to `ssh` and `sftp`: this key only, no agent, no prompts, host keys
    /// recorded in the test's own file (`strict`: must match what was recorded).
    fn options(&self, key: &str, from: &str, strict: bool) -> Vec<String> {
        let mut args: Vec<String> = vec!["-F".into(), "/dev/null".into()];
        for option in [
            format!("IdentityFile={}", self.key(key).display()),
            "IdentitiesOnly=yes".into(),
            "IdentityAgent=none".into(),
            "BatchMode=yes".into(),
            "ConnectTimeout=10".into(),
            "LogLevel=ERROR".into(),
            format!("BindAddress={from}"),
            format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ),
            format!(
                "StrictHostKeyChecking={}",
                if strict { "yes" } else { "accept-new" }
            ),
        ] {
            args.push("-o".into());
            args.push(option);
        }
        args
    }

    fn ssh_command(
        &self,
        key: &str,
        from: &str,
        strict: bool,
        remote: &[&str],
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ssh");
        command
            .args(self.options(key, from, strict))
            .args(["-p", &self.port.to_string(), "ma-user@127.0.0.1"])
            .args(remote)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn ssh(&self, key: &str, from: &str, remote: &[&str]) -> std::process::Output {
        self.ssh_strict(key, from, false, remote).await
    }

    async fn ssh_strict(
        &self,
        key: &str,
        from: &str,
        strict: bool,
        remote: &[&str],
    ) -> std::process::Output {
        tokio::time::timeout(
            Duration::from_secs(30),
            self.ssh_command(key, from, strict, remote).output(),
        )
        .await
        .expect("ssh finishes within 30 s")
        .expect("ssh runs")
    }

    async fn sftp(&self, key: &str, from: &str, batch: &str) -> std::process::Output {
        let batch_file = self.dir.path().join("batch");
        std::fs::write(&batch_file, batch).unwrap();
        let mut command = tokio::process::Command::new("sftp");
        command
            .args(self.options(key, from, false))
            .args(["-P", &self.port.to_string(), "-b"])
            .arg(&batch_file)
            .arg("ma-user@127.0.0.1")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .expect("sftp finishes within 30 s")
            .expect("sftp runs")
    }

    /// The first bytes the server sends to a TCP client at `from` (empty: closed at once).
    async fn first_bytes(&self, from: &str) -> Result<Vec<u8>, std::io::Error> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
        let mut stream = socket
            .connect(SocketAddr::new("127.0.0.1".parse().unwrap(), self.port))
            .await?;
        let mut buffer = vec![0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("the server answers or closes within 10 s")?;
        buffer.truncate(read);
        Ok(buffer)
    }
}

fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ssh_port(notebook: &Value) -> u16 {
    let uri = notebook["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == "SSH")
        .and_then(|e| e["uri"].as_str())
        .unwrap_or_else(|| panic!("no SSH uri: {notebook}"));
    let port = uri
        .strip_prefix("ssh://ma-user@127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected SSH uri {uri}"));
    port.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_reaches_the_notebook_sandbox_with_the_right_key_from_allowed_addresses_only() {
    let test = "ssh_reaches_the_notebook_sandbox_with_the_right_key_from_allowed_addresses_only";
    if !local_runtime_available(test) || !ssh_available(test) {
        return;
    }
    let app = TestApp::builder().local().spawn().await;
    let mine = create_keypair(&app, "mine", None).await;
    let other = create_keypair(&app, "other", None).await;
    let created = app
        .create_notebook(&ssh_body("ssh", &["mine"], &["127.0.0.2"]))
        .await;
    let id = id_of(&created).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let client = Client {
        dir: tempfile::tempdir().unwrap(),
        port: ssh_port(&running),
    };
    client.write_key("mine", mine["private_key"].as_str().unwrap());
    client.write_key("other", other["private_key"].as_str().unwrap());
    let lab = Lab::of(&app, &running).await;
    assert_eq!(lab.put_file("hello.txt", "from jupyter").await, 201);

    // The right key from an allowed address: ma-user in the notebook's sandbox, its work
    // volume, its processes (JupyterLab) and its image's Python first on PATH.
    let output = client
        .ssh(
            "mine",
            "127.0.0.2",
            &["id -un; pwd; cat hello.txt; echo; cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c jupyter.sock; command -v python"],
        )
        .await;
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        ["ma-user", "/home/ma-user/work", "from jupyter"],
        "{stdout}"
    );
    assert!(
        lines[3].parse::<u32>().unwrap() >= 1,
        "JupyterLab not visible: {stdout}"
    );
    assert!(
        !lines[4].starts_with("/usr/bin"),
        "the image's python comes first: {stdout}"
    );

    // A terminal.
    let output = client.ssh("mine", "127.0.0.2", &["-tt", "tty"]).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("/dev/pts/"),
        "{}",
        text(&output)
    );

    // The same containment as the notebook's kernels: seccomp, no new privileges, no
    // capabilities, no nested user namespaces, the notebook's own network namespace.
    let output = client
        .ssh(
            "mine",
            "127.0.0.2",
            &["grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; unshare -Ur true; echo unshare=$?; grep -c tap0 /proc/net/dev"],
        )
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "unshare=1",
    ] {
        assert!(stdout.contains(expected), "{expected}: {}", text(&output));
    }
    assert_eq!(stdout.lines().last(), Some("1"), "tap0: {}", text(&output));

    // A key pair the endpoint does not name gets nowhere.
    let output = client.ssh("other", "127.0.0.2", &["true"]).await;
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Permission denied"),
        "{}",
        text(&output)
    );

    // From an address outside the allow-list: closed before any byte (no SSH banner).
    let allowed = client.first_bytes("127.0.0.2").await.unwrap();
    assert!(allowed.starts_with(b"SSH-2.0-"), "{allowed:?}");
    let refused = client.first_bytes("127.0.0.1").await.unwrap_or_default();
    assert!(refused.is_empty(), "{refused:?}");
    let output = client.ssh("mine", "127.0.0.1", &["true"]).await;
    assert!(!output.status.success(), "{}", text(&output));

    // sftp puts a file that JupyterLab's contents API lists.
    let upload = client.dir.path().join("upload.txt");
    std::fs::write(&upload, "via sftp").unwrap();
    let output = client
        .sftp(
            "mine",
            "127.0.0.2",
            &format!("put {} uploaded.txt\n", upload.display()),
        )
        .await;
    assert!(output.status.success(), "{}", text(&output));
    let listing: Value = lab.get("api/contents/").await.json().await.unwrap();
    let names: Vec<&str> = listing["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"uploaded.txt"), "{names:?}");
    assert_eq!(
        lab.read_file("uploaded.txt").await.as_deref(),
        Some("via sftp")
    );

    // An Update of the allow-list applies to the next connection, while running.
    let update = json!({"endpoints": [{"service": "SSH", "key_pair_names": ["mine"], "allowed_access_ips": ["127.0.0.0/31"]}]});
    let (status, json) = json_of(
        app.signed("PUT", &app.notebook_path(&id), Some(&update.to_string()))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(
        client
            .first_bytes("127.0.0.2")
            .await
            .unwrap_or_default()
            .is_empty()
    );
    let output = client.ssh("mine", "127.0.0.1", &["true"]).await;
    assert!(output.status.success(), "{}", text(&output));

    // Stop closes open sessions and the port.
    let mut session = client
        .ssh_command("mine", "127.0.0.1", false, &["sleep 600"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(session.try_wait().unwrap().is_none(), "the session is open");
    app.stop(&id).await;
    let ended = tokio::time::timeout(Duration::from_secs(15), session.wait()).await;
    assert!(ended.is_ok(), "stop closes the open SSH session");
    app.wait_status(&id, "STOPPED", Duration::from_secs(30))
        .await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", client.port)).await;
    assert!(refused.is_err(), "the port refuses connections after stop");

    // Started again: same port, same host key (the recorded one must match), same volume.
    app.start(&id).await;
    let running = app
        .wait_status(&id, "RUNNING", Duration::from_secs(120))
        .await;
    assert_eq!(ssh_port(&running), client.port);
    let output = client
        .ssh_strict("mine", "127.0.0.1", true, &["cat uploaded.txt"])
        .await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "via sftp");

    // Delete gives the port back: the next SSH notebook gets it.
    let response = app.signed("DELETE", &app.notebook_path(&id), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.wait_gone(&id).await;
    let next = app.create_notebook(&ssh_body("next", &["mine"], &[])).await;
    let stored = app
        .store
        .find_notebook(&id_of(&next).parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.ssh_endpoint().and_then(|e| e.port),
        Some(client.port)
    );
    app.wait_status(id_of(&next), "RUNNING", Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_ssh_session_keeps_an_idle_lease_and_its_end_starts_the_countdown() {
    let test = "an_open_ssh_session_keeps_an_idle_lease_and_its_end_starts_the_countdown";
    if !local_runtime_available(test) || !ssh_available(test) {
        return;
    }
    let clock = atelier_server::clock::ManualClock::new(crate::support::wall_clock_ms());
    let app = TestApp::builder().local().clock(clock).spawn().await;
    let mine = create_keypair(&app, "mine", None).await;
    let mut body = ssh_body("idle-ssh", &["mine"], &[]);
    body["volume"] = json!({"category": "EFS", "ownership": "MANAGED"});
    body["lease"] = json!({"duration": 900_000, "type": "IDLE"});
    let id = id_of(&app.create_notebook(&body).await).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let client = Client {
        dir: tempfile::tempdir().unwrap(),
        port: ssh_port(&running),
    };
    client.write_key("mine", mine["private_key"].as_str().unwrap());
    let minutes = |m: u64| Duration::from_secs(60 * m);

    // A quiet but open SSH session is work in progress: no cull past the idle period.
    let mut session = client
        .ssh_command("mine", "127.0.0.1", false, &["sleep 600"])
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = crate::metrics::scrape(&app).await;
        if crate::metrics::sample(&text, "atelier_ssh_sessions") == Some(1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SSH session never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(session.try_wait().unwrap().is_none(), "the session is open");
    app.advance(minutes(16));
    app.assert_status_holds(&id, "RUNNING", Duration::from_millis(800))
        .await;

    // The session ends: the idle period counts from its end.
    session.kill().await.unwrap();
    // Once the server has seen the session end (sshd notices the client is gone on its own
    // time: on a loaded machine well after 500 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = crate::metrics::scrape(&app).await;
        if crate::metrics::sample(&text, "atelier_ssh_sessions") == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SSH session never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.advance(minutes(14));
    app.assert_status_holds(&id, "RUNNING", Duration::from_millis(500))
        .await;
    app.advance(minutes(2));
    let stopped = app
        .wait_status(&id, "STOPPED", Duration::from_secs(30))
        .await;
    assert_eq!(stopped["stop_reason"], "idle");
    app.shutdown().await;
}
