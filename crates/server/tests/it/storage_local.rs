//! Dynamic storage with real parts: Garage (a real S3-compatible server) on loopback, s3fs
//! run by the local runtime, a real JupyterLab whose kernel reads and writes the bucket.
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use atelier_server::config::{ObjectStoreSettings, StorageSettings};

use crate::local::{FIRST_START, Lab, local_runtime_available};
use crate::support::garage::{Garage, garage_bin};
use crate::support::{TestApp, id_of, json_of, notebook_body};

/// Garage and s3fs are here (CI installs both); required where the local runtime is.
fn storage_tools_available(test: &str) -> bool {
    if !local_runtime_available(test) {
        return false;
    }
    let s3fs = std::process::Command::new("s3fs")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    if !s3fs {
        missing.push("s3fs");
    }
    if garage_bin().is_none() {
        missing.push("garage (cargo install garage)");
    }
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var("ATELIER_REQUIRE_LOCAL_RUNTIME").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: needs {}", missing.join(", "));
    eprintln!("skipping {test}: needs {}", missing.join(", "));
    false
}

fn store(garage: &Garage, secret: &str, endpoint: &str, bucket: &str) -> ObjectStoreSettings {
    ObjectStoreSettings {
        endpoint: endpoint.to_owned(),
        region: "garage".to_owned(),
        access_key_id: garage.access_key_id.clone(),
        secret_access_key: secret.to_owned(),
        projects: vec!["*".to_owned()],
        buckets: vec![bucket.to_owned()],
        read_only: false,
    }
}

/// The S3 API, as any client of the bucket sees it.
struct S3 {
    bucket: rusty_s3::Bucket,
    credentials: rusty_s3::Credentials,
    client: reqwest::Client,
}

impl S3 {
    fn new(garage: &Garage, bucket: &str) -> S3 {
        S3 {
            bucket: rusty_s3::Bucket::new(
                garage.endpoint.parse().unwrap(),
                rusty_s3::UrlStyle::Path,
                bucket.to_owned(),
                "garage".to_owned(),
            )
            .unwrap(),
            credentials: rusty_s3::Credentials::new(
                garage.access_key_id.clone(),
                garage.secret_access_key.clone(),
            ),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn put(&self, key: &str, body: &str) {
        use rusty_s3::S3Action;
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(Duration::from_secs(600));
        let response = self
            .client
            .put(url)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
    }

    async fn get(&self, key: &str) -> Option<String> {
        use rusty_s3::S3Action;
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(Duration::from_secs(600));
        let response = self.client.get(url).send().await.unwrap();
        if response.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert!(response.status().is_success(), "{response:?}");
        Some(response.text().await.unwrap())
    }
}

/// A Garage with one bucket, the S3 API on it, and a `[storage]` granting it to every project.
async fn one_bucket(bucket: &'static str) -> (Garage, S3, StorageSettings) {
    let garage = tokio::task::spawn_blocking(move || Garage::start(&[bucket]))
        .await
        .unwrap();
    let s3 = S3::new(&garage, bucket);
    let storage = StorageSettings {
        object_stores: vec![store(
            &garage,
            &garage.secret_access_key,
            &garage.endpoint,
            bucket,
        )],
        shares: vec![],
    };
    (garage, s3, storage)
}

fn storage_path(app: &TestApp, id: &str) -> String {
    format!("{}/storage", app.notebook_path(id))
}

async fn attach(app: &TestApp, id: &str, mount_path: &str, uri: &str) -> String {
    let body = json!({"category": "OBS", "mount_path": mount_path, "uri": uri}).to_string();
    let (status, json) = json_of(
        app.signed("POST", &storage_path(app, id), Some(&body))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["status"], "MOUNTING");
    json["id"].as_str().unwrap().to_owned()
}

/// Attaches `uri` at `mount_path` and waits until it is MOUNTED.
async fn attach_mounted(app: &TestApp, id: &str, mount_path: &str, uri: &str) -> String {
    let storage_id = attach(app, id, mount_path, uri).await;
    let settled = settle(app, id, &storage_id).await.unwrap();
    assert_eq!(settled["status"], "MOUNTED", "{settled}");
    storage_id
}

/// Waits until the mount leaves MOUNTING (or UNMOUNTING); `None` once it is gone.
async fn settle(app: &TestApp, id: &str, storage_id: &str) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let path = format!("{}/{storage_id}", storage_path(app, id));
        let (status, json) = json_of(app.signed("GET", &path, None).await).await;
        if status == StatusCode::NOT_FOUND {
            return None;
        }
        let busy = ["MOUNTING", "UNMOUNTING"].contains(&json["status"].as_str().unwrap_or(""));
        if !busy {
            return Some(json);
        }
        assert!(Instant::now() < deadline, "mount still busy: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The notebook's s3fs daemons on this host.
fn s3fs_of(app: &TestApp, id: &str) -> usize {
    let needle = app
        .data_dir
        .join("dynamic")
        .join(id)
        .to_string_lossy()
        .into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let text = String::from_utf8_lossy(cmdline);
            text.starts_with("s3fs") && text.contains(&needle)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_prefix_is_mounted_into_a_running_notebook_and_back_out() {
    if !storage_tools_available("a_bucket_prefix_is_mounted_into_a_running_notebook_and_back_out") {
        return;
    }
    let garage = tokio::task::spawn_blocking(|| Garage::start(&["team-data", "team-bad"]))
        .await
        .unwrap();
    let s3 = S3::new(&garage, "team-data");
    s3.put("in/hello.txt", "from the bucket").await;
    s3.put("elsewhere/secret.txt", "not under the prefix").await;
    let secret = garage.secret_access_key.clone();
    let app = TestApp::builder()
        .local()
        .storage(StorageSettings {
            object_stores: vec![
                store(&garage, &secret, &garage.endpoint, "team-data"),
                store(
                    &garage,
                    "0".repeat(64).as_str(),
                    &garage.endpoint,
                    "team-bad",
                ),
                store(&garage, &secret, "http://127.0.0.1:1", "team-far"),
            ],
            shares: vec![],
        })
        .spawn()
        .await;
    let created = app.create_notebook(&notebook_body("obs")).await;
    let id = id_of(&created).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let lab = Lab::of(&app, &running).await;

    let storage_id = attach(&app, &id, "/data/in/", "obs://team-data/in/").await;
    let mounted = settle(&app, &id, &storage_id).await.unwrap();
    assert_eq!(mounted["status"], "MOUNTED", "{mounted}");

    // The kernel sees the prefix (and only it), as ma-user, and writes into the bucket.
    let seen = lab
        .execute(concat!(
            "import os\n",
            "print(open('/data/in/hello.txt').read(), sorted(os.listdir('/data/in')), ",
            "os.stat('/data/in/hello.txt').st_uid, os.path.ismount('/data/in'))\n",
            "with open('/data/in/from-kernel.txt', 'w') as f: f.write('written in the notebook')\n",
        ))
        .await;
    assert_eq!(seen.trim(), "from the bucket ['hello.txt'] 1000 True");
    assert_eq!(
        s3.get("in/from-kernel.txt").await.as_deref(),
        Some("written in the notebook"),
        "closed files are in the bucket"
    );

    // A hostile tenant: /data itself is not theirs, the mount is nosuid,nodev, and the keys
    // are nowhere in the sandbox.
    let probes = lab
        .execute(&concat!(
            "import os, glob\n",
            "try:\n    os.mkdir('/data/evil'); print('made')\nexcept OSError as e: print(type(e).__name__)\n",
            "try:\n    os.rename('/data/in', '/data/moved'); print('moved')\nexcept OSError as e: print(type(e).__name__)\n",
            "line = [l for l in open('/proc/self/mountinfo') if ' /data/in ' in l][0]\n",
            "print('nosuid' in line and 'nodev' in line)\n",
            "found = []\n",
            "for p in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n",
            "    try:\n        found.append(open(p, 'rb').read())\n    except OSError: pass\n",
            "print(any(SECRET in blob for blob in found))\n",
        ).replace("SECRET", &format!("b'{secret}'")))
        .await;
    assert_eq!(
        probes.split_whitespace().collect::<Vec<_>>(),
        vec!["PermissionError", "PermissionError", "True", "False"],
        "{probes}"
    );

    // A wrong key and an unreachable endpoint fail with a reason, and change nothing else.
    for (path, uri) in [
        ("/data/bad/", "obs://team-bad/x/"),
        ("/data/far/", "obs://team-far/x/"),
    ] {
        let failing = attach(&app, &id, path, uri).await;
        let failed = settle(&app, &id, &failing).await.unwrap();
        assert_eq!(failed["status"], "MOUNT_FAILED", "{failed}");
        let reason = failed["failure_reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty() && !reason.contains(&secret), "{failed}");
        let path = format!("{}/{failing}", storage_path(&app, &id));
        let (status, _) = json_of(app.signed("DELETE", &path, None).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(settle(&app, &id, &failing).await.is_none());
    }
    assert_eq!(
        lab.execute("import os; print(sorted(os.listdir('/data')))")
            .await
            .trim(),
        "['in']"
    );

    // A stop unmounts (nothing left running); a start mounts again before RUNNING.
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(60))
        .await;
    assert_eq!(s3fs_of(&app, &id), 0, "a stopped notebook keeps no s3fs");
    app.start(&id).await;
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let volume = running["data_volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == storage_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(volume["status"], "MOUNTED", "{running}");
    let lab = Lab::of(&app, &running).await;
    assert_eq!(
        lab.execute("print(open('/data/in/from-kernel.txt').read())")
            .await
            .trim(),
        "written in the notebook"
    );

    // Detached: gone from the API, from the sandbox and from the host; the objects stay.
    let path = format!("{}/{storage_id}", storage_path(&app, &id));
    let (status, detached) = json_of(app.signed("DELETE", &path, None).await).await;
    assert_eq!(status, StatusCode::OK, "{detached}");
    assert_eq!(detached["status"], "UNMOUNTING");
    assert!(settle(&app, &id, &storage_id).await.is_none());
    assert_eq!(
        lab.execute("import os; print(os.path.exists('/data/in'), os.listdir('/data'))")
            .await
            .trim(),
        "False []"
    );
    assert_eq!(s3fs_of(&app, &id), 0);
    assert_eq!(
        s3.get("in/hello.txt").await.as_deref(),
        Some("from the bucket")
    );
    let (status, _) = json_of(app.signed("DELETE", &app.notebook_path(&id), None).await).await;
    assert_eq!(status, StatusCode::OK);
    app.wait_gone(&id).await;
    assert!(
        !app.data_dir.join("dynamic").join(&id).exists(),
        "a deleted notebook leaves no /data tree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_started_from_the_warm_pool_gets_its_mounts_too() {
    if !storage_tools_available("a_notebook_started_from_the_warm_pool_gets_its_mounts_too") {
        return;
    }
    let (_garage, s3, storage) = one_bucket("team-warm").await;
    s3.put("w/seed.txt", "seed").await;
    let app = TestApp::builder()
        .local()
        .warm_pool(1)
        .storage(storage)
        .spawn()
        .await;
    let created = app.create_notebook(&notebook_body("warm")).await;
    let id = id_of(&created).to_owned();
    app.wait_status(&id, "RUNNING", FIRST_START).await;
    attach_mounted(&app, &id, "/data/w/", "obs://team-warm/w/").await;
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(60))
        .await;
    // The pool has a warm sandbox by now: the next start claims it, a slot uid of its own.
    crate::local::wait_warm(&app, 1.0).await;
    app.start(&id).await;
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    assert_eq!(running["data_volumes"][0]["status"], "MOUNTED", "{running}");
    assert!(
        app.data_dir.join("run").join(&id).join("slot").exists(),
        "the start claimed the warm sandbox"
    );
    let lab = Lab::of(&app, &running).await;
    let seen = lab
        .execute(concat!(
            "import os\n",
            "print(open('/data/w/seed.txt').read(), os.stat('/data/w/seed.txt').st_uid)\n",
            "with open('/data/w/warm.txt', 'w') as f: f.write('from a warm sandbox')\n",
        ))
        .await;
    assert_eq!(seen.trim(), "seed 1000");
    assert_eq!(
        s3.get("w/warm.txt").await.as_deref(),
        Some("from a warm sandbox")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_share_is_bound_in_as_the_notebooks_user() {
    if !local_runtime_available("an_operators_share_is_bound_in_as_the_notebooks_user") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    // A team's share, owned on the host by a uid of its own.
    let share = tempfile::tempdir().unwrap();
    let owner = 4242;
    std::fs::write(share.path().join("shared.txt"), "team data").unwrap();
    for path in [share.path().to_path_buf(), share.path().join("shared.txt")] {
        std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
    }
    let app = TestApp::builder()
        .local()
        .storage(StorageSettings {
            object_stores: vec![],
            shares: vec![
                atelier_server::config::ShareSettings {
                    id: "team-share".to_owned(),
                    path: share.path().to_path_buf(),
                    projects: vec!["*".to_owned()],
                    read_only: false,
                },
                atelier_server::config::ShareSettings {
                    id: "team-read".to_owned(),
                    path: share.path().to_path_buf(),
                    projects: vec!["*".to_owned()],
                    read_only: true,
                },
            ],
        })
        .spawn()
        .await;
    let created = app.create_notebook(&notebook_body("share")).await;
    let id = id_of(&created).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let lab = Lab::of(&app, &running).await;
    for (dir, efs_id) in [("team", "team-share"), ("ro", "team-read")] {
        let body = json!({"category": "EFS", "mount_path": format!("/data/{dir}/"),
            "uri": format!("{efs_id}.sfsturbo.internal:/"), "efs_id": efs_id});
        let (status, json) = json_of(
            app.signed("POST", &storage_path(&app, &id), Some(&body.to_string()))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let mounted = settle(&app, &id, json["id"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(mounted["status"], "MOUNTED", "{mounted}");
    }
    let seen = lab
        .execute(concat!(
            "import os\n",
            "print(open('/data/team/shared.txt').read().replace(' ', '_'), os.stat('/data/team/shared.txt').st_uid)\n",
            "with open('/data/team/mine.txt', 'w') as f: f.write('x')\n",
            "try:\n    open('/data/ro/nope.txt', 'w'); print('wrote')\nexcept OSError as e: print(e.errno == 30)\n",
        ))
        .await;
    assert_eq!(
        seen.split_whitespace().collect::<Vec<_>>(),
        ["team_data", "1000", "True"]
    );
    // What the notebook wrote belongs to the share's owner on the host.
    let written = std::fs::metadata(share.path().join("mine.txt")).unwrap();
    assert_eq!(written.uid(), owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_of_a_start_see_its_dynamic_storage() {
    use crate::hooks::{b64, events_of, hook_lines, with_hooks};
    if !storage_tools_available("the_hooks_of_a_start_see_its_dynamic_storage") {
        return;
    }
    let (_garage, s3, storage) = one_bucket("team-hooks").await;
    s3.put("h/requirements.txt", "numpy==2.0").await;
    let app = TestApp::builder().local().storage(storage).spawn().await;
    // What ModelArts users do with a pre_start hook: read something from the bucket.
    let read = |point: &str| {
        json!({"script": b64(&format!("echo {point}: $(cat /data/h/requirements.txt 2>&1)")),
               "type": "COMMAND", "mode": "BLOCK"})
    };
    let created = app
        .create_notebook(&with_hooks(
            "hooked-obs",
            json!({"container_hooks": {"pre_start": read("pre"), "post_start": read("post")}}),
        ))
        .await;
    let id = id_of(&created).to_owned();
    app.wait_status(&id, "RUNNING", FIRST_START).await;
    attach_mounted(&app, &id, "/data/h/", "obs://team-hooks/h/").await;
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(60))
        .await;
    app.start(&id).await;
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    assert_eq!(running["data_volumes"][0]["status"], "MOUNTED", "{running}");
    let events = events_of(&app, &id).await;
    let restart = events
        .iter()
        .rposition(|e| e["reason"] == "StartRequested")
        .unwrap();
    let outputs: Vec<String> = hook_lines(&events[restart..])
        .into_iter()
        .filter(|l| l.starts_with("HookOutput"))
        .collect();
    assert_eq!(
        outputs,
        [
            "HookOutput: pre_start hook output:\npre: numpy==2.0",
            "HookOutput: post_start hook output:\npost: numpy==2.0",
        ],
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_notebook_writes_to_a_bucket_is_buffered_in_its_own_scratch_space() {
    if !storage_tools_available(
        "what_a_notebook_writes_to_a_bucket_is_buffered_in_its_own_scratch_space",
    ) {
        return;
    }
    let (_garage, s3, storage) = one_bucket("team-big").await;
    let app = TestApp::builder()
        .local()
        .storage_scratch_gb(1)
        .storage(storage)
        .spawn()
        .await;
    let created = app.create_notebook(&notebook_body("big")).await;
    let id = id_of(&created).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    attach_mounted(&app, &id, "/data/big/", "obs://team-big/b/").await;
    let state = app.data_dir.join("dynamic").join(&id).join("state");
    // A hostile tenant writes 1.5 GiB into one open file: s3fs buffers it until the close,
    // in the notebook's 1 GiB scratch filesystem, and refuses what does not fit.
    let lab = Lab::of(&app, &running).await;
    let written = lab
        .execute(concat!(
            "chunk = b'x' * (8 << 20)\n",
            "n = 0\n",
            "try:\n",
            "    with open('/data/big/huge.bin', 'wb') as f:\n",
            "        while n < (1536 << 20):\n",
            "            f.write(chunk); f.flush(); n += len(chunk)\n",
            "    print('wrote', n)\n",
            "except OSError as e:\n",
            "    print('refused', n >> 20, e.errno)\n",
        ))
        .await;
    let words: Vec<&str> = written.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"refused"), "{written}");
    let mib: u64 = words[1].parse().unwrap();
    assert!((512..1024).contains(&mib), "{written}");
    // It went to the scratch image (sparse, 1 GiB at most), not to the host's free space.
    let scratch = std::fs::metadata(state.join("scratch.ext4")).unwrap();
    assert_eq!(scratch.len(), 1 << 30);
    // A small file still goes through, and the notebook's stop takes the scratch away.
    lab.execute("open('/data/big/small.txt', 'w').write('fits')\n")
        .await;
    assert_eq!(s3.get("b/small.txt").await.as_deref(), Some("fits"));
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(60))
        .await;
    assert!(!state.join("scratch.ext4").exists());
    assert!(
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(&state.join("scratch").to_string_lossy().into_owned()),
        "the scratch filesystem is unmounted"
    );
}
