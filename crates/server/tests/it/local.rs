//! Real notebooks: the local runtime runs JupyterLab in bubblewrap inside a cgroup, and the
//! gateway proxies `http://{id}.localhost:PORT/…` to it. These tests need root, bubblewrap, cgroups and Python's
//! venv module; `.ci/run` installs them and sets `ATELIER_REQUIRE_LOCAL_RUNTIME=1`, so there a
//! missing piece fails the test. Elsewhere the tests skip with a message naming what is missing.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestApp, id_of, notebook_body};

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the local runtime needs that this machine lacks, if anything.
fn missing_prerequisites() -> Vec<&'static str> {
    let mut missing = Vec::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    if !root {
        missing.push("root");
    }
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).exists()))
    };
    if !on_path("bwrap") {
        missing.push("bubblewrap");
    }
    if !(std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists())
    {
        missing.push("cgroups");
    }
    let venv = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import venv, ensurepip"])
        .status()
        .is_ok_and(|s| s.success());
    if !venv {
        missing.push("python3-venv");
    }
    missing
}

/// True when the test may run; panics in CI when something is missing.
pub(crate) fn local_runtime_available(test: &str) -> bool {
    let missing = missing_prerequisites();
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{test}: the local runtime needs {}",
        missing.join(", ")
    );
    eprintln!(
        "skipping {test}: the local runtime needs {}",
        missing.join(", ")
    );
    false
}

/// Starts of the first test provision the image from PyPI: allow for it.
pub(crate) const FIRST_START: Duration = Duration::from_secs(600);

/// A running notebook's JupyterLab, reached as a browser would: at its own origin
/// `http://{id}.localhost:PORT` (the client resolves `*.localhost` to the gateway, as browsers
/// do), with the token from the API.
#[derive(Clone)]
pub(crate) struct Lab {
    gateway: std::net::SocketAddr,
    /// `http://{id}.localhost:PORT`.
    origin: String,
    token: String,
    client: reqwest::Client,
}

impl Lab {
    pub(crate) async fn of(app: &TestApp, notebook: &Value) -> Lab {
        let url = notebook["url"]
            .as_str()
            .expect("a running notebook has a url");
        let origin = url
            .strip_suffix("/lab")
            .unwrap_or_else(|| panic!("{url} is the notebook's JupyterLab"))
            .to_owned();
        let host = origin.trim_start_matches("http://");
        let name = host.split(':').next().unwrap();
        Lab {
            gateway: app.gateway_addr,
            client: reqwest::Client::builder()
                .no_proxy()
                .resolve(name, app.gateway_addr)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            origin,
            token: notebook["token"]
                .as_str()
                .expect("a running notebook has a token")
                .to_owned(),
        }
    }

    /// `id.localhost:PORT`, what browsers send as `Host`.
    pub(crate) fn host(&self) -> &str {
        self.origin.trim_start_matches("http://")
    }

    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{}", self.origin, path.trim_start_matches('/'))
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn put_file(&self, name: &str, text: &str) -> reqwest::StatusCode {
        self.client
            .put(self.url(&format!("api/contents/{name}")))
            .header("Authorization", format!("token {}", self.token))
            .json(&json!({"type": "file", "format": "text", "content": text}))
            .send()
            .await
            .unwrap()
            .status()
    }

    pub(crate) async fn read_file(&self, name: &str) -> Option<String> {
        let response = self.get(&format!("api/contents/{name}?content=1")).await;
        if response.status() != 200 {
            return None;
        }
        let body: Value = response.json().await.unwrap();
        body["content"].as_str().map(str::to_owned)
    }

    /// POSTs `body` to `path` and returns the JSON answer (a new kernel or terminal).
    async fn post_json(&self, path: &str, body: Value) -> Value {
        self.client
            .post(self.url(path))
            .header("Authorization", format!("token {}", self.token))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Opens the WebSocket at `path` through the gateway, with the token in the query.
    async fn websocket(&self, path: &str) -> WebSocket {
        let url = format!("ws://{}/{path}?token={}", self.host(), self.token);
        self.websocket_with(&url, &[])
            .await
            .unwrap_or_else(|e| panic!("websocket {path}: {e}"))
    }

    /// Opens the WebSocket at `url` (`ws://{host}/…`) through the gateway with extra headers.
    pub(crate) async fn websocket_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<WebSocket, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let tcp = tokio::net::TcpStream::connect(self.gateway).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .map(|(socket, _)| socket)
    }

    /// Types `command` into a new terminal (terminado over the gateway's WebSocket) and
    /// returns what the terminal printed until the command's output settled.
    pub(crate) async fn terminal(&self, command: &str) -> String {
        let created = self.post_json("api/terminals", json!({})).await;
        let name = created["name"].as_str().expect("terminal name").to_owned();
        let mut socket = self.websocket(&format!("terminals/websocket/{name}")).await;
        let marker = "__done__";
        socket
            .send(Message::text(
                json!(["stdin", format!("{command}; echo {marker}\r")]).to_string(),
            ))
            .await
            .unwrap();
        let mut output = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // The marker shows twice: typed (echoed) and printed.
        while output.matches(marker).count() < 2 {
            let next = tokio::time::timeout_at(deadline, socket.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = next else {
                break;
            };
            let message: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if message[0] == "stdout" {
                output.push_str(message[1].as_str().unwrap_or(""));
            }
        }
        let _ = socket.close(None).await;
        output
    }

    /// Runs `code` in a new kernel over its WebSocket; returns stdout plus the result text.
    pub(crate) async fn execute(&self, code: &str) -> String {
        let kernel_id = self.start_kernel().await;
        let socket = self
            .websocket(&format!("api/kernels/{kernel_id}/channels"))
            .await;
        execute_on(socket, code).await
    }

    /// Starts a kernel through the REST API; returns its id.
    pub(crate) async fn start_kernel(&self) -> String {
        let kernel = self
            .post_json("api/kernels", json!({"name": "python3"}))
            .await;
        kernel["id"].as_str().expect("kernel id").to_owned()
    }
}

/// Runs `code` over a kernel's channels WebSocket; returns stdout plus the result text.
pub(crate) async fn execute_on(mut socket: WebSocket, code: &str) -> String {
    let msg_id = uuid::Uuid::new_v4().to_string();
    let request = json!({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid::Uuid::new_v4().to_string(),
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": false, "store_history": false,
                    "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}
    });
    socket
        .send(Message::text(request.to_string()))
        .await
        .unwrap();
    let mut output = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["parent_header"]["msg_id"] != msg_id.as_str() {
            continue;
        }
        match message["msg_type"].as_str() {
            Some("stream") => output.push_str(message["content"]["text"].as_str().unwrap_or("")),
            Some("execute_result") => output.push_str(
                message["content"]["data"]["text/plain"]
                    .as_str()
                    .unwrap_or(""),
            ),
            Some("error") => output.push_str(&format!("ERROR {}", message["content"]["ename"])),
            Some("status") if message["content"]["execution_state"] == "idle" => break,
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_runs_behind_the_gateway_and_keeps_the_work_volume() {
    if !local_runtime_available("jupyterlab_runs_behind_the_gateway_and_keeps_the_work_volume") {
        return;
    }
    let app = TestApp::builder().local().spawn().await;
    let created = app.create_notebook(&notebook_body("lab")).await;
    let id = id_of(&created).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let steps: Vec<&str> = running["action_progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["COMPLETED"; 4], "{running}");
    assert_eq!(
        running["url"],
        format!("http://{id}.localhost:{}/lab", app.gateway_addr.port()).as_str()
    );
    let lab = Lab::of(&app, &running).await;

    // The token is required, and checked.
    let bare = lab.client.get(lab.url("api/status")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let wrong = lab
        .client
        .get(lab.url("api/status?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    // `?token=` works and leaves a cookie scoped to the notebook.
    let with_query = lab
        .client
        .get(lab.url(&format!("api/status?token={}", lab.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(with_query.status(), 200);
    let cookie = with_query
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("atelier-token="))
        .expect("token cookie");
    assert!(
        cookie.contains("Path=/")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Domain"),
        "{cookie}"
    );
    // The gateway's cookie with JupyterLab's own login cookie, as a browser sends them back.
    let jar = cookie_header(&cookie_jar(&with_query));
    let by_cookie = lab
        .client
        .get(lab.url("api/status"))
        .header("Cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);
    // Without the gateway's cookie, JupyterLab's alone does not pass the gateway.
    let jupyter_only = jar
        .split("; ")
        .filter(|c| !c.starts_with("atelier-token="))
        .collect::<Vec<_>>()
        .join("; ");
    let refused = lab
        .client
        .get(lab.url("api/status"))
        .header("Cookie", jupyter_only)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // The lab page itself.
    let page = lab.get("lab").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("JupyterLab"));

    // Files through the contents API land in the work volume; code runs in a kernel.
    assert!(
        lab.put_file("kept.txt", "survives a stop")
            .await
            .is_success()
    );
    assert_eq!(lab.execute("1+1").await.trim(), "2");
    let whoami = lab
        .execute("import os, getpass; print(getpass.getuser(), os.getcwd(), os.environ['HOME'])")
        .await;
    assert_eq!(
        whoami.trim(),
        "ma-user /home/ma-user/work /home/ma-user/work"
    );
    // The built-in image's kernel settings (no sleep before replies, no waiting flushes of
    // empty streams) are in force, and output still arrives whole and in order.
    let settings = lab
        .execute(
            "from ipykernel.iostream import OutStream\n\
             print(OutStream._atelier_fast_flush, get_ipython().kernel._execute_sleep)",
        )
        .await;
    assert_eq!(settings.trim(), "True 0.0");
    let streamed = lab
        .execute(
            "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.01)\n\
             print('x' * 100000)\n'done'",
        )
        .await;
    assert!(streamed.starts_with("0\n1\n2\n"), "{streamed:.40}");
    assert_eq!(streamed.matches('x').count(), 100_000);
    let tail = streamed.get(streamed.len().saturating_sub(20)..);
    assert!(streamed.ends_with("'done'"), "{tail:?}");

    // Stop, start: the file is still there, and the old token no longer opens anything.
    let old_token = lab.token.clone();
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(30))
        .await;
    let stopped = lab
        .client
        .get(lab.url(&format!("api/status?token={old_token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 404, "a stopped notebook has no route");
    app.start(&id).await;
    let restarted = app
        .wait_status(&id, "RUNNING", Duration::from_secs(120))
        .await;
    let lab = Lab::of(&app, &restarted).await;
    assert_ne!(lab.token, old_token, "every start makes a new token");
    let old = lab
        .client
        .get(lab.url(&format!("api/status?token={old_token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 403);
    assert_eq!(
        lab.read_file("kept.txt").await.as_deref(),
        Some("survives a stop")
    );

    // Delete removes the notebook and its volume.
    // notebook_body asks for EVS: a sparse ext4 image, loop-mounted while running.
    let volume = app.data_dir.join("volumes").join(format!("{id}.ext4"));
    assert!(volume.exists());
    let deleted = app.signed("DELETE", &app.notebook_path(&id), None).await;
    assert_eq!(deleted.status(), 200);
    app.wait_gone(&id).await;
    assert!(!volume.exists(), "the volume goes with the notebook");
    // The gateway's traffic shows in the control plane's metrics.
    let metrics = crate::metrics::scrape(&app).await;
    let requests = crate::metrics::sample(&metrics, "atelier_gateway_requests_total").unwrap();
    assert!(requests >= 5.0, "{metrics}");
    let from = crate::metrics::sample(
        &metrics,
        "atelier_gateway_bytes_total{direction=\"from_notebook\"}",
    )
    .unwrap();
    assert!(from > 1000.0, "{metrics}");
    // Busy polling is opt-in: by default the gateway never spins.
    let polled =
        crate::metrics::sample(&metrics, "atelier_gateway_busy_poll_seconds_total").unwrap();
    assert_eq!(polled, 0.0, "{metrics}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebooks_are_isolated_and_one_running_out_of_memory_spares_the_other() {
    if !local_runtime_available(
        "notebooks_are_isolated_and_one_running_out_of_memory_spares_the_other",
    ) {
        return;
    }
    use atelier_server::config::FlavorConfig;
    let tiny = FlavorConfig {
        id: "modelarts.vm.cpu.tiny".to_owned(),
        name: None,
        vcpus: 1,
        memory_gib: 1,
        feature: "NOTEBOOK".to_owned(),
        category: "CPU".to_owned(),
        sold_out: false,
    };
    let app = TestApp::builder().local().flavors(vec![tiny]).spawn().await;
    let mut body = notebook_body("a");
    body["flavor"] = json!("modelarts.vm.cpu.tiny");
    let a = id_of(&app.create_notebook(&body).await).to_owned();
    body["name"] = json!("b");
    let b = id_of(&app.create_notebook(&body).await).to_owned();
    let a_running = app.wait_status(&a, "RUNNING", FIRST_START).await;
    let b_running = app.wait_status(&b, "RUNNING", FIRST_START).await;
    let lab_a = Lab::of(&app, &a_running).await;
    let lab_b = Lab::of(&app, &b_running).await;
    assert!(
        lab_b
            .put_file("secret-of-b.txt", "b only")
            .await
            .is_success()
    );

    // A sees only its own volume, none of B's files or processes, and no data dir.
    let seen = lab_a.execute(&format!(
        "import os, glob\n\
         procs = [open(f'/proc/{{p}}/cmdline','rb').read().decode(errors='replace') for p in os.listdir('/proc') if p.isdigit()]\n\
         print('files', sorted(f for f in glob.glob('/home/ma-user/work/*') if not f.endswith('lost+found')))\n\
         print('b-in-procs', any('{b}' in c for c in procs))\n\
         print('own-in-procs', any('{a}' in c for c in procs))\n\
         print('secret', sum(len(glob.glob(d + '/**/secret-of-b.txt', recursive=True)) for d in ('/home', '/tmp', '/run', '/etc', '/var', '/srv', '/mnt')))\n\
         print('datadir', os.path.exists('{data}'))\n\
         print('server-env', sorted(k for k in os.environ if k.startswith(('ATELIER', 'CARGO', 'RUST'))))",
        data = app.data_dir.display()
    )).await;
    assert!(seen.contains("files []"), "{seen}");
    assert!(seen.contains("b-in-procs False"), "{seen}");
    assert!(seen.contains("own-in-procs True"), "{seen}");
    assert!(seen.contains("secret 0"), "{seen}");
    assert!(seen.contains("datadir False"), "{seen}");
    assert!(
        seen.contains("server-env []"),
        "the server's environment stays out: {seen}"
    );

    // A exceeds its 1 GiB: the kernel kills it, and A shows ERROR saying so.
    let _ = lab_a.execute("x = bytearray(3 * 1024**3)").await;
    let failed = app.wait_status(&a, "ERROR", Duration::from_secs(30)).await;
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(reason.contains("out of memory"), "{reason}");
    // B is untouched.
    assert_eq!(app.show_ok(&b).await["status"], "RUNNING");
    assert_eq!(lab_b.execute("2+3").await.trim(), "5");
    assert_eq!(
        lab_b.read_file("secret-of-b.txt").await.as_deref(),
        Some("b only")
    );
    // Sandboxes outlive the server by design: remove them before it goes.
    for id in [&a, &b] {
        assert_eq!(
            app.signed("DELETE", &app.notebook_path(id), None)
                .await
                .status(),
            200
        );
        app.wait_gone(id).await;
    }
    app.shutdown().await;
}

/// Reads a host-side cgroup limit of the notebook (v1 or v2 file names).
fn cgroup_value(id: &str, v1: &str, v2: &str) -> String {
    let v2_path = format!("/sys/fs/cgroup/atelier/{id}/{v2}");
    let text = std::fs::read_to_string(&v2_path)
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/{v1}").replace("{id}", id)))
        .unwrap_or_default();
    text.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evs_grows_online_limits_follow_the_flavor_and_a_local_image_runs() {
    if !local_runtime_available("evs_grows_online_limits_follow_the_flavor_and_a_local_image_runs")
    {
        return;
    }
    // A Python environment of the host with JupyterLab, as `local://` images name.
    let prefix = tokio::task::spawn_blocking(crate::support::local_prefix)
        .await
        .unwrap();
    let app = TestApp::builder().local().spawn().await;
    let created = app.create_notebook(&notebook_body("disk")).await;
    let id = id_of(&created).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let lab = Lab::of(&app, &running).await;
    let size_gb = "import os; s = os.statvfs('/home/ma-user/work'); print(round(s.f_blocks * s.f_frsize / 2**30))";
    assert_eq!(
        lab.execute(size_gb).await.trim(),
        "5",
        "EVS capacity is a real limit"
    );

    // The flavor's limits (modelarts.vm.cpu.2u: 2 vCPUs, 8 GiB) are set on the cgroup.
    let memory = cgroup_value(
        &id,
        "memory/atelier/{id}/memory.limit_in_bytes",
        "memory.max",
    );
    assert_eq!(memory, (8u64 << 30).to_string());
    let cpu = cgroup_value(&id, "cpu/atelier/{id}/cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == "200000" || cpu == "200000 100000", "{cpu}");
    assert_eq!(
        cgroup_value(&id, "pids/atelier/{id}/pids.max", "pids.max"),
        "1024"
    );

    // An update refused for one field changes nothing, the disk size it also asks for
    // included (the volume used to be grown before admission ran).
    let refused = app
        .signed(
            "PUT",
            &app.notebook_path(&id),
            Some(r#"{"flavor": "modelarts.vm.cpu.8u", "storage_new_size": 7}"#),
        )
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        lab.execute(size_gb).await.trim(),
        "5",
        "the volume did not grow"
    );
    let image_file = app.data_dir.join("volumes").join(format!("{id}.ext4"));
    assert_eq!(
        std::fs::metadata(&image_file).unwrap().len(),
        5 << 30,
        "{}",
        image_file.display()
    );
    assert_eq!(app.show_ok(&id).await["volume"]["capacity"], 5);

    // Growing the disk of a running notebook happens online; shrinking is refused.
    let grown = app
        .signed(
            "PUT",
            &app.notebook_path(&id),
            Some(r#"{"storage_new_size": 6}"#),
        )
        .await;
    assert_eq!(grown.status(), 200);
    // Online where the kernel allows it (some container hosts refuse EXT4 online resizing);
    // otherwise at the next start, never lost.
    let lab = if lab.execute(size_gb).await.trim() == "6" {
        lab
    } else {
        app.stop(&id).await;
        app.wait_status(&id, "STOPPED", Duration::from_secs(30))
            .await;
        app.start(&id).await;
        Lab::of(
            &app,
            &app.wait_status(&id, "RUNNING", Duration::from_secs(120))
                .await,
        )
        .await
    };
    assert_eq!(lab.execute(size_gb).await.trim(), "6", "the volume grew");
    assert_eq!(app.show_ok(&id).await["volume"]["capacity"], 6);
    let shrink = app
        .signed(
            "PUT",
            &app.notebook_path(&id),
            Some(r#"{"storage_new_size": 5}"#),
        )
        .await;
    assert_eq!(shrink.status(), 400);

    // A DEDICATED image naming a Python environment of the host runs too.
    let registered = app
        .signed(
            "POST",
            &format!("/v1/{}/images", crate::support::PROJECT_ID),
            Some(&json!({"swr_path": format!("local://{}", prefix.display())}).to_string()),
        )
        .await;
    assert_eq!(registered.status(), 200);
    let image: Value = registered.json().await.unwrap();
    let mut body = notebook_body("own-image");
    body["image_id"] = image["id"].clone();
    body["volume"] = json!({"category": "EFS", "ownership": "MANAGED"});
    let own = id_of(&app.create_notebook(&body).await).to_owned();
    let own_running = app
        .wait_status(&own, "RUNNING", Duration::from_secs(120))
        .await;
    assert_eq!(
        Lab::of(&app, &own_running)
            .await
            .execute("6*7")
            .await
            .trim(),
        "42"
    );

    for id in [&id, &own] {
        assert_eq!(
            app.signed("DELETE", &app.notebook_path(id), None)
                .await
                .status(),
            200
        );
        app.wait_gone(id).await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_culling_spares_traffic_and_busy_kernels_and_stops_the_idle() {
    if !local_runtime_available("idle_culling_spares_traffic_and_busy_kernels_and_stops_the_idle") {
        return;
    }
    let clock = atelier_server::clock::ManualClock::new(crate::support::wall_clock_ms());
    let app = TestApp::builder().local().clock(clock).spawn().await;
    let mut body = notebook_body("idle");
    body["volume"] = json!({"category": "EFS", "ownership": "MANAGED"});
    body["lease"] = json!({"duration": 900_000, "type": "IDLE"});
    let id = id_of(&app.create_notebook(&body).await).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let lab = Lab::of(&app, &running).await;
    let minutes = |m: u64| Duration::from_secs(60 * m);

    // Traffic through the gateway at minute 14 moves the deadline past minute 15.
    app.advance(minutes(14));
    assert_eq!(lab.get("api/status").await.status(), 200);
    app.advance(minutes(2));
    app.assert_status_holds(&id, "RUNNING", Duration::from_millis(500))
        .await;

    // A kernel busy for a while keeps the notebook, though nothing crosses the gateway.
    let busy = {
        let worker = lab.clone();
        tokio::spawn(async move { worker.execute("import time; time.sleep(6)").await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kernels: Value = lab.get("api/kernels").await.json().await.unwrap();
        if kernels
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["execution_state"] == "busy")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kernel never got busy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.advance(minutes(16));
    app.assert_status_holds(&id, "RUNNING", Duration::from_millis(800))
        .await;
    busy.await.unwrap();

    // Nothing happens for longer than the lease: the notebook is stopped as idle.
    // (A last WebSocket frame of the finished execution, e.g. its close handshake, may land
    // after the clock moved and count as activity then: allow one more idle period.)
    let stopped = 'culled: {
        for _ in 0..2 {
            app.advance(minutes(16));
            let until = tokio::time::Instant::now() + Duration::from_secs(5);
            while tokio::time::Instant::now() < until {
                let shown = app.show_ok(&id).await;
                if shown["status"] != "RUNNING" {
                    break 'culled app
                        .wait_status(&id, "STOPPED", Duration::from_secs(30))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("an idle notebook was not stopped");
    };
    assert_eq!(stopped["stop_reason"], "idle");
    assert_eq!(
        app.signed("DELETE", &app.notebook_path(&id), None)
            .await
            .status(),
        200
    );
    app.wait_gone(&id).await;
    app.shutdown().await;
}

/// The idle warm sandboxes, from `/metrics`.
pub(crate) async fn warm_sandboxes(app: &TestApp) -> f64 {
    let text = crate::metrics::scrape(app).await;
    crate::metrics::sample(&text, "atelier_warm_pool_sandboxes").unwrap_or(-1.0)
}

pub(crate) async fn wait_warm(app: &TestApp, wanted: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while warm_sandboxes(app).await != wanted {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the warm pool never held {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_serves_the_next_start_with_the_notebooks_own_volume_and_token() {
    let test = "a_warm_sandbox_serves_the_next_start_with_the_notebooks_own_volume_and_token";
    if !local_runtime_available(test) {
        return;
    }
    // A data dir of the test's own: it is inspected after the server has stopped.
    let owned = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .local()
        .warm_pool(1)
        .data_dir(owned.path())
        .spawn()
        .await;
    let mut body = notebook_body("warm-a");
    body["volume"] = json!({"category": "EFS", "ownership": "MANAGED"});
    let id = id_of(&app.create_notebook(&body).await).to_owned();
    // The first start of this image and flavor is cold; it fills the pool behind it.
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    assert!(!app.data_dir.join("run").join(&id).join("slot").exists());
    wait_warm(&app, 1.0).await;
    let lab = Lab::of(&app, &running).await;
    assert_eq!(lab.put_file("mine.txt", "a's work").await, 201);
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(30))
        .await;

    // The next start claims the warm sandbox: the notebook's volume, a new token, kernels.
    app.start(&id).await;
    let running = app
        .wait_status(&id, "RUNNING", Duration::from_secs(60))
        .await;
    assert!(
        app.data_dir.join("run").join(&id).join("slot").exists(),
        "the start did not come from the pool; the notebook's changes outside its work dir: {:?}",
        std::process::Command::new("find")
            .arg(app.data_dir.join("roots").join(&id).join("fs/upper"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    );
    let warm_lab = Lab::of(&app, &running).await;
    assert_ne!(warm_lab.token, lab.token);
    assert_eq!(
        warm_lab.read_file("mine.txt").await.as_deref(),
        Some("a's work")
    );
    assert_eq!(
        lab.get("api/status").await.status(),
        403,
        "the old token is dead"
    );
    assert_eq!(warm_lab.execute("1+1").await.trim(), "2");
    assert_eq!(warm_lab.put_file("written-warm.txt", "x").await, 201);
    // A kernel's relative paths land in the volume too: kernels inherit JupyterLab's working
    // directory, which the warm sandbox entered before the claim mounted the volume over it.
    assert_eq!(
        warm_lab
            .execute(
                "import os; open('from-kernel.txt', 'w').write('k'); print(sorted(n for n in os.listdir('.') if n.endswith('.txt')))"
            )
            .await
            .trim(),
        "['from-kernel.txt', 'mine.txt', 'written-warm.txt']"
    );
    assert_eq!(
        std::fs::read_to_string(
            app.data_dir
                .join("volumes")
                .join(&id)
                .join("from-kernel.txt")
        )
        .ok()
        .as_deref(),
        Some("k"),
        "what the kernel wrote is in the volume on the host"
    );
    // Limits and the cgroup follow the notebook.
    let memory = cgroup_value(
        &id,
        "memory/atelier/{id}/memory.limit_in_bytes",
        "memory.max",
    );
    assert_eq!(memory.trim(), (8u64 * 1024 * 1024 * 1024).to_string());

    // Another notebook gets a fresh warm sandbox: nothing of the first one's.
    wait_warm(&app, 1.0).await;
    let mut other = notebook_body("warm-b");
    other["volume"] = json!({"category": "EFS", "ownership": "MANAGED"});
    let other_id = id_of(&app.create_notebook(&other).await).to_owned();
    let other_running = app
        .wait_status(&other_id, "RUNNING", Duration::from_secs(60))
        .await;
    assert!(
        app.data_dir
            .join("run")
            .join(&other_id)
            .join("slot")
            .exists()
    );
    let other_lab = Lab::of(&app, &other_running).await;
    assert_eq!(other_lab.read_file("mine.txt").await, None);
    assert_eq!(other_lab.read_file("written-warm.txt").await, None);
    assert!(
        app.data_dir
            .join("volumes")
            .join(&id)
            .join("written-warm.txt")
            .exists(),
        "the claimed sandbox wrote to the notebook's own volume"
    );

    // Stops release the claimed mount points; shutdown drains the pool.
    for notebook in [&id, &other_id] {
        app.stop(notebook).await;
        app.wait_status(notebook, "STOPPED", Duration::from_secs(30))
            .await;
    }
    wait_warm(&app, 1.0).await;
    let data_dir = app.data_dir.clone();
    let pool = data_dir.join("pool");
    app.shutdown().await;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(
        !mounts.contains(&pool.display().to_string()),
        "mount points left: {mounts}"
    );
    let left: Vec<_> = std::fs::read_dir(data_dir.join("run"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pool-"))
        .collect();
    assert!(left.is_empty(), "warm sandboxes left: {left:?}");
    let bwraps = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            String::from_utf8_lossy(c).contains(&format!("{}/run/pool-", data_dir.display()))
        })
        .count();
    assert_eq!(bwraps, 0, "warm sandbox processes left");
}

/// `name=value` of every `Set-Cookie` in `response`, as a browser would send them back.
fn cookie_jar(response: &reqwest::Response) -> Vec<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .filter_map(|c| c.split_once('='))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// The `Cookie` header a browser sends back with `jar`.
fn cookie_header(jar: &[(String, String)]) -> String {
    jar.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_an_origin_reach_kernels_and_forged_requests_do_not() {
    let test = "clients_that_send_an_origin_reach_kernels_and_forged_requests_do_not";
    if !local_runtime_available(test) {
        return;
    }
    let app = TestApp::builder().local().spawn().await;
    let id = id_of(&app.create_notebook(&notebook_body("origin")).await).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let lab = Lab::of(&app, &running).await;
    let token = format!("token {}", lab.token);

    // A non-browser client (VS Code, websocket-client) sends an Origin of its own and the
    // token in a header: the kernel's WebSocket opens and runs code.
    let kernel = lab.start_kernel().await;
    let channels = format!("ws://{}/api/kernels/{kernel}/channels", lab.host());
    for origin in [
        "vscode-file://vscode-app",
        "http://localhost:8888",
        lab.origin(),
    ] {
        let socket = lab
            .websocket_with(
                &channels,
                &[("origin", origin), ("authorization", token.as_str())],
            )
            .await
            .unwrap_or_else(|e| panic!("origin {origin}: {e}"));
        assert_eq!(execute_on(socket, "6*7").await.trim(), "42", "{origin}");
    }

    // A browser: the `?token=` link leaves the gateway's cookie and JupyterLab's own login
    // and XSRF cookies, all host-only.
    let page = lab
        .client
        .get(lab.url(&format!("lab?token={}", lab.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    for cookie in page.headers().get_all("set-cookie") {
        let cookie = cookie.to_str().unwrap();
        assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
        assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    }
    let jar = cookie_jar(&page);
    let names: Vec<&str> = jar.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"atelier-token"), "{names:?}");
    assert!(names.contains(&"_xsrf"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("username-")),
        "{names:?}"
    );
    let cookies = cookie_header(&jar);
    let xsrf = jar.iter().find(|(n, _)| n == "_xsrf").unwrap().1.clone();

    // JupyterLab's XSRF protection is on: the cookies alone cannot write...
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = lab
            .client
            .post(lab.url("api/contents"))
            .header("cookie", &cookies)
            .json(&json!({"type": "file", "ext": ".txt"}));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let forged = post(vec![("origin", lab.origin().to_owned())])
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "{}", forged.text().await.unwrap());
    // ...the page's own request, with the XSRF token it read from its cookie, can.
    let own = post(vec![
        ("origin", lab.origin().to_owned()),
        ("x-xsrftoken", xsrf.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(own.status(), 201, "{}", own.text().await.unwrap());
    // A sibling notebook's page is stopped at the gateway, XSRF token or not.
    let sibling = format!(
        "http://{}.localhost:{}",
        uuid::Uuid::new_v4(),
        app.gateway_addr.port()
    );
    let cross = post(vec![("origin", sibling.clone()), ("x-xsrftoken", xsrf)])
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let body: Value = cross.json().await.unwrap();
    assert!(
        body["error_msg"].as_str().unwrap().contains("Cross-origin"),
        "{body}"
    );
    // Nor can it open the kernel's WebSocket with the browser's cookies.
    let refused = lab
        .websocket_with(
            &channels,
            &[("origin", sibling.as_str()), ("cookie", cookies.as_str())],
        )
        .await;
    assert!(refused.is_err(), "a cross-origin WebSocket opened");
    // The browser's own WebSocket (cookies and its own Origin) opens.
    let socket = lab
        .websocket_with(
            &channels,
            &[("origin", lab.origin()), ("cookie", cookies.as_str())],
        )
        .await
        .expect("the page's own WebSocket");
    assert_eq!(execute_on(socket, "'ok'").await.trim(), "'ok'");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_adopted_after_a_restart_that_runs_out_of_memory_is_reported_as_such() {
    let test = "a_sandbox_adopted_after_a_restart_that_runs_out_of_memory_is_reported_as_such";
    if !local_runtime_available(test) {
        return;
    }
    use atelier_server::config::FlavorConfig;
    let tiny = FlavorConfig {
        id: "modelarts.vm.cpu.tiny".to_owned(),
        name: None,
        vcpus: 1,
        memory_gib: 1,
        feature: "NOTEBOOK".to_owned(),
        category: "CPU".to_owned(),
        sold_out: false,
    };
    let data = tempfile::tempdir().unwrap();
    let first = TestApp::builder()
        .local()
        .flavors(vec![tiny.clone()])
        .data_dir(data.path())
        .spawn()
        .await;
    let mut body = notebook_body("adopted");
    body["flavor"] = json!("modelarts.vm.cpu.tiny");
    let id = id_of(&first.create_notebook(&body).await).to_owned();
    first.wait_status(&id, "RUNNING", FIRST_START).await;
    // The server goes; the sandbox stays, and the next server adopts it.
    first.shutdown_leaving_sandboxes().await;
    let second = TestApp::builder()
        .local()
        .flavors(vec![tiny])
        .data_dir(data.path())
        .spawn()
        .await;
    let running = second.show_ok(&id).await;
    assert_eq!(running["status"], "RUNNING", "{running}");
    let lab = Lab::of(&second, &running).await;
    assert_eq!(lab.execute("2+3").await.trim(), "5");

    // Supervised like a launched sandbox: an OOM kill reads as one, not as a plain exit.
    let _ = lab.execute("x = bytearray(3 * 1024**3)").await;
    let failed = second
        .wait_status(&id, "ERROR", Duration::from_secs(30))
        .await;
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(reason.contains("out of memory"), "{reason}");
    assert_eq!(
        second
            .signed("DELETE", &second.notebook_path(&id), None)
            .await
            .status(),
        200
    );
    second.wait_gone(&id).await;
    second.shutdown().await;
}
