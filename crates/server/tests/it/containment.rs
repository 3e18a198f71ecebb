//! The hostile tenant: every probe the last security review used against a notebook, run
//! from inside a real sandbox through its kernel (and `ssh.rs` runs the same identity probes
//! through SSH), each asserted blocked; and what must keep working still works.
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use serde_json::{Value, json};

use crate::local::{FIRST_START, Lab, local_runtime_available};
use crate::support::{TestApp, id_of, notebook_body};

/// The host's own addresses (what a notebook must not reach), from `ip -o addr`.
fn host_addresses() -> Vec<IpAddr> {
    let output = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(3);
            fields.next()?.split('/').next()?.parse().ok()
        })
        .filter(|ip: &IpAddr| {
            !ip.is_loopback()
                && !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
        })
        .collect()
}

/// A notebook with an EFS volume (the directory kind, with the quota image).
fn efs_body(name: &str) -> Value {
    let mut body = notebook_body(name);
    body["volume"] = json!({"category": "EFS", "ownership": "MANAGED"});
    body
}

/// A temp dir the notebooks' uids can pass through, and the data dir in it (for tests that
/// restart the server on the same data dir).
fn data_dir_in_tempdir() -> (tempfile::TempDir, std::path::PathBuf) {
    let owned = tempfile::tempdir().unwrap();
    std::fs::set_permissions(owned.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data_dir = owned.path().join("data");
    (owned, data_dir)
}

/// Stops the notebook, then deletes it and waits until it is gone.
async fn stop_and_delete(app: &TestApp, id: &str) {
    app.stop(id).await;
    app.wait_status(id, "STOPPED", Duration::from_secs(30))
        .await;
    assert_eq!(
        app.signed("DELETE", &app.notebook_path(id), None)
            .await
            .status(),
        200
    );
    app.wait_gone(id).await;
}

/// What the probe script found, as JSON.
const PROBE: &str = r#"
import ctypes, errno, json, os, shutil, socket, subprocess, traceback, urllib.request
TARGETS = json.loads(__TARGETS__)
out = {}
def err(number):
    return errno.errorcode.get(number, str(number))
def probe(key, fn):
    try:
        out[key] = fn()
    except OSError as e:
        out[key] = err(e.errno) if e.errno else repr(e)
    except Exception:
        out[key] = "EXCEPTION " + traceback.format_exc()
def status():
    found = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        found[key] = value.strip()
    return found
probe("uid_map", lambda: open("/proc/self/uid_map").read().split())
probe("status", lambda: {k: v for k, v in status().items() if k in ("Seccomp", "NoNewPrivs", "CapEff")})
def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return "written"
probe("core_pattern", lambda: write("/proc/sys/kernel/core_pattern", "|/home/ma-user/work/h.sh"))
probe("sysctl_vm", lambda: write("/proc/sys/vm/drop_caches", "3"))
probe("sysrq", lambda: write("/proc/sysrq-trigger", "h") if os.path.exists("/proc/sysrq-trigger") else "absent")
def read(path):
    try:
        return open(path).read(64)
    except OSError as e:
        return err(e.errno)
probe("masked", lambda: {p: read(p) for p in ("/proc/timer_list", "/proc/keys", "/proc/kallsyms") if os.path.exists(p)})
libc = ctypes.CDLL(None, use_errno=True)
def call(number, *args):
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return "ok" if result >= 0 else err(ctypes.get_errno())
probe("unshare_user", lambda: call(272, 0x10000000))
probe("unshare_net", lambda: call(272, 0x40000000))
probe("unshare_mount", lambda: call(272, 0x00020000))
probe("mount", lambda: "ok" if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 else err(ctypes.get_errno()))
probe("keyctl", lambda: call(250, 0, -3, 0, 0, 0))
probe("bpf", lambda: call(321, 0, 0, 0))
probe("perf_event_open", lambda: call(298, 0, 0, -1, -1, 0))
probe("init_module", lambda: call(175, 0, 0, 0))
probe("x32_getpid", lambda: call(0x40000000 + 39))
probe("clone3", lambda: call(435, 0, 0))
probe("unshare_cmd", lambda: subprocess.run(["unshare", "-Ur", "true"], capture_output=True).returncode)
def plant():
    shutil.copy("/bin/bash", "/home/ma-user/work/suid-bash")
    os.chmod("/home/ma-user/work/suid-bash", 0o4755)
    return subprocess.run(["/home/ma-user/work/suid-bash", "-p", "-c", "id -u"], capture_output=True, text=True).stdout.strip()
probe("suid_euid", plant)
probe("work_mount", lambda: next(l.split()[5] for l in open("/proc/self/mountinfo") if l.split()[4] == "/home/ma-user/work"))
probe("run_atelier", lambda: sorted(os.listdir("/run/atelier")))
probe("run_atelier_write", lambda: write("/run/atelier/pid", "1"))
def connect(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family)
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as e:
        return err(e.errno) if e.errno else type(e).__name__
    finally:
        s.close()
probe("connect", lambda: {f"{h}:{p}": connect(h, p) for h, p in TARGETS})
def abstract():
    unix = socket.socket(socket.AF_UNIX)
    unix.connect("\0" + __ABSTRACT__)
    return "connected"
probe("abstract", abstract)
probe("host_unix_paths", lambda: __DATA__ in open("/proc/net/unix").read())
def listen():
    global _listener
    _listener = socket.socket()
    _listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _listener.bind(("0.0.0.0", __BIND__))
    _listener.listen()
    return "listening"
probe("listen", listen)
probe("pypi", lambda: urllib.request.urlopen("https://pypi.org/simple/six/", timeout=30).status)
import sys
probe("pip_download", lambda: subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", "/tmp/dl", "six"], capture_output=True, text=True, timeout=120).returncode)
print(json.dumps(out))
"#;

fn probe_script(targets: &[(String, u16)], abstract_name: &str, data: &str, bind: u16) -> String {
    PROBE
        .replace(
            "__TARGETS__",
            &serde_json::to_string(&serde_json::to_string(targets).unwrap()).unwrap(),
        )
        .replace(
            "__ABSTRACT__",
            &serde_json::to_string(abstract_name).unwrap(),
        )
        .replace("__DATA__", &serde_json::to_string(data).unwrap())
        .replace("__BIND__", &bind.to_string())
}

/// Whether this host reaches PyPI itself (the sandbox's egress is asserted only then).
async fn host_reaches_pypi() -> bool {
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect("pypi.org:443"),
    )
    .await
    .is_ok_and(|c| c.is_ok())
}

#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_notebook_cannot_become_root_reach_the_host_or_leave_its_namespaces() {
    let test = "a_hostile_notebook_cannot_become_root_reach_the_host_or_leave_its_namespaces";
    if !local_runtime_available(test) {
        return;
    }
    let app = TestApp::builder().local().spawn().await;
    let id = id_of(&app.create_notebook(&efs_body("hostile")).await).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let lab = Lab::of(&app, &running).await;

    // Host services a notebook must not reach: the API and the gateway (loopback), and a
    // listener on every host address.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let api: SocketAddr = app.base_url.trim_start_matches("http://").parse().unwrap();
    let gateway: SocketAddr = app.gateway_addr;
    let mut targets: Vec<(String, u16)> = vec![
        ("127.0.0.1".into(), api.port()),
        ("127.0.0.1".into(), gateway.port()),
        ("127.0.0.1".into(), port),
        ("10.0.2.2".into(), port),
        ("10.0.2.2".into(), api.port()),
        ("169.254.169.254".into(), 80),
    ];
    let host = host_addresses();
    assert!(!host.is_empty(), "the host has addresses");
    targets.extend(host.iter().map(|ip| (ip.to_string(), port)));
    // A host abstract Unix socket (the namespace of abstract names is per network namespace).
    let abstract_name = format!("atelier-test-{}", uuid::Uuid::new_v4());
    let abstract_addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abstract_name.as_bytes(),
        )
        .unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&abstract_addr).unwrap();
    let bind_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();

    let script = probe_script(
        &targets,
        &abstract_name,
        &app.data_dir.display().to_string(),
        bind_port,
    );
    let output = lab.execute(&script).await;
    let found: Value = serde_json::from_str(output.trim())
        .unwrap_or_else(|e| panic!("probe output is not JSON ({e}): {output}"));

    // 1. No host root: uid 1000 maps to one unprivileged uid, the notebook's own. Inside,
    // the map shows one line (1000 → its parent namespace); the host sees the truth: every
    // process of the notebook's cgroup runs as the notebook's uid.
    let uid_map: Vec<&str> = found["uid_map"]
        .as_array()
        .unwrap_or_else(|| panic!("{found}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(uid_map.len(), 3, "one mapping only: {uid_map:?}");
    assert_eq!((uid_map[0], uid_map[2]), ("1000", "1"));
    let uid: u32 = std::fs::read_to_string(app.data_dir.join("uids").join(&id))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(uid >= 2_000_000_000, "an Atelier-range uid, not {uid}");
    let procs = ["memory/atelier", "atelier"]
        .iter()
        .map(|dir| format!("/sys/fs/cgroup/{dir}/{id}/cgroup.procs"))
        .find_map(|path| std::fs::read_to_string(path).ok())
        .expect("the notebook's cgroup");
    let pids: Vec<&str> = procs.split_whitespace().collect();
    assert!(
        pids.len() >= 3,
        "bwrap, JupyterLab, a kernel, slirp4netns: {pids:?}"
    );
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ids: Vec<&str> = status
            .lines()
            .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
            .flat_map(|l| l.split_whitespace().skip(1))
            .collect();
        assert!(
            ids.iter().all(|i| *i == uid.to_string()),
            "process {pid} runs as {ids:?}, not only {uid}"
        );
    }
    let volume = app.data_dir.join("volumes").join(&id);
    let root = std::fs::metadata(&volume).unwrap();
    assert_eq!(root.uid(), uid, "the volume belongs to the notebook's uid");
    assert_eq!(root.permissions().mode() & 0o777, 0o700);
    assert_eq!(found["status"]["Seccomp"], "2", "{found}");
    assert_eq!(found["status"]["NoNewPrivs"], "1");
    assert_eq!(found["status"]["CapEff"], "0000000000000000");
    // Kernel surface: sysctls, sysrq, masked files, namespaces, mounts, keyrings, bpf, perf,
    // modules, the x32 bypass and clone3.
    assert_ne!(found["core_pattern"], "written", "{found}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern,
        "the host's core_pattern is untouched"
    );
    assert_ne!(found["sysctl_vm"], "written");
    assert_ne!(found["sysrq"], "written");
    for (path, content) in found["masked"]
        .as_object()
        .unwrap_or_else(|| panic!("{found}"))
    {
        assert!(
            content == "" || content == "EACCES",
            "{path} is masked: {content}"
        );
    }
    for call in [
        "unshare_user",
        "unshare_net",
        "unshare_mount",
        "mount",
        "keyctl",
        "bpf",
        "perf_event_open",
        "init_module",
    ] {
        assert_eq!(found[call], "EPERM", "{call}: {found}");
    }
    assert_eq!(found["x32_getpid"], "ENOSYS", "{found}");
    assert_eq!(found["clone3"], "ENOSYS", "{found}");
    assert_ne!(
        found["unshare_cmd"], 0,
        "nested user namespaces are refused"
    );
    assert_eq!(found["listen"], "listening", "{found}");
    // Setuid planting: nosuid,nodev inside; on the host the file is the notebook's uid's.
    let options = found["work_mount"].as_str().unwrap();
    assert!(
        options.contains("nosuid") && options.contains("nodev"),
        "{options}"
    );
    assert_eq!(found["suid_euid"], "1000", "setuid gains nothing");
    let planted = std::fs::metadata(volume.join("suid-bash")).unwrap();
    assert_eq!(planted.uid(), uid, "not root's on the host");
    assert_ne!(planted.uid(), 0);

    // 2. Control files: the sandbox sees only the read-only launcher and SSH files in
    // /run/atelier (what it writes beside them stays in its own tmpfs); the server's run dir
    // is root's alone and its pid record untouched.
    assert_eq!(found["run_atelier"], json!(["launch.py", "ssh"]), "{found}");
    let run_dir = app.data_dir.join("run").join(&id);
    let run_meta = std::fs::metadata(&run_dir).unwrap();
    assert_eq!(
        (run_meta.uid(), run_meta.permissions().mode() & 0o777),
        (0, 0o700)
    );
    let record = std::fs::read_to_string(run_dir.join("pid")).unwrap();
    assert_ne!(
        record.trim(),
        "1",
        "the server's pid record is not the sandbox's to write"
    );
    assert_eq!(record.split_whitespace().count(), 3, "{record}");

    // 3. A network of its own: nothing of the host is reachable, nothing binds on it.
    for (target, outcome) in found["connect"].as_object().unwrap() {
        assert_ne!(outcome, "connected", "{target} was reachable: {found}");
    }
    assert!(
        listener.accept().is_err(),
        "no connection reached the host listener"
    );
    assert_ne!(found["abstract"], "connected", "{found}");
    assert_eq!(found["host_unix_paths"], false, "host socket paths visible");
    for ip in host
        .iter()
        .copied()
        .chain(["127.0.0.1".parse::<IpAddr>().unwrap()])
    {
        let reached = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(SocketAddr::new(ip, bind_port)),
        )
        .await
        .is_ok_and(|c| c.is_ok());
        assert!(
            !reached,
            "the notebook's listener is reachable on the host at {ip}"
        );
    }
    // … while the outside still is (pip and friends).
    if host_reaches_pypi().await {
        assert_eq!(
            found["pypi"], 200,
            "egress to the package registry: {found}"
        );
    } else {
        eprintln!("{test}: this host does not reach pypi.org; egress not checked");
    }
    // The notebook still works: kernels, files, terminals.
    assert_eq!(lab.execute("6*7").await.trim(), "42");
    assert_eq!(lab.put_file("still.txt", "fine").await, 201);
    let terminal = lab.terminal("echo from-a-terminal > t.txt; id -un").await;
    assert!(terminal.contains("ma-user"), "{terminal}");
    assert_eq!(
        lab.read_file("t.txt").await.as_deref(),
        Some("from-a-terminal\n")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_pids_a_notebook_writes_are_never_acted_on_across_stops_and_restarts() {
    let test = "paths_and_pids_a_notebook_writes_are_never_acted_on_across_stops_and_restarts";
    if !local_runtime_available(test) {
        return;
    }
    let (_owned, data_dir) = data_dir_in_tempdir();
    let app = TestApp::builder()
        .local()
        .warm_pool(1)
        .data_dir(&data_dir)
        .spawn()
        .await;
    let id = id_of(&app.create_notebook(&efs_body("attacker")).await).to_owned();
    let neighbour = id_of(&app.create_notebook(&efs_body("neighbour")).await).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let neighbour_running = app
        .wait_status(&neighbour, "RUNNING", Duration::from_secs(120))
        .await;

    // What the attacker aims at: a host directory, the neighbour's volume, a host process.
    let canary = tempfile::tempdir().unwrap();
    std::fs::write(canary.path().join("keep"), "host data").unwrap();
    let neighbour_volume = data_dir.join("volumes").join(&neighbour);
    let neighbour_lab = Lab::of(&app, &neighbour_running).await;
    assert_eq!(neighbour_lab.put_file("precious.txt", "mine").await, 201);
    let mut victim = std::process::Command::new("/bin/sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let victim_pid = victim.id();

    // Every file the sandbox can write, filled with host paths and pids; the names the
    // server once trusted planted everywhere, and symlinks out.
    let lab = Lab::of(&app, &running).await;
    let plant = format!(
        r#"
import os
targets = [{canary:?}, {neighbour:?}, "/", {data:?}]
pid = "{victim_pid}"
for d in ["/home/ma-user/work", "/tmp", "/home/ma-user/work/.jupyter"]:
    os.makedirs(d, exist_ok=True)
    for name in ["pid", "slot", "claim", "warm", "jupyter.sock", "passwd", "launch.py"]:
        with open(os.path.join(d, name), "w") as f:
            f.write(pid + " 1 " + pid + "\n" + targets[0])
    for i, t in enumerate(targets):
        try:
            os.symlink(t, os.path.join(d, f"link{{i}}"))
        except OSError:
            pass
written = 0
for root, dirs, files in os.walk("/", topdown=True):
    # /opt holds the image's JupyterLab, ma-user's to change (and to break: that is the
    # notebook's own business, not the server's).
    dirs[:] = [x for x in dirs if x not in ("proc", "sys", "dev", "usr", "opt")]
    for name in files:
        path = os.path.join(root, name)
        if os.path.islink(path) or not os.access(path, os.W_OK):
            continue
        try:
            with open(path, "a") as f:
                f.write("\n" + pid + "\n" + targets[1] + "\n")
            written += 1
        except OSError:
            pass
print(written)
"#,
        canary = canary.path().display().to_string(),
        neighbour = neighbour_volume.display().to_string(),
        data = data_dir.display().to_string(),
    );
    let written = lab.execute(&plant).await;
    assert!(
        written.trim().parse::<u32>().is_ok(),
        "the plant ran: {written}"
    );

    // Stop, start (from the warm pool), restart the server (adoption), stop, delete.
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(30))
        .await;
    app.start(&id).await;
    app.wait_status(&id, "RUNNING", Duration::from_secs(60))
        .await;
    app.shutdown_leaving_sandboxes().await;
    let app = TestApp::builder()
        .local()
        .warm_pool(1)
        .data_dir(&data_dir)
        .spawn()
        .await;
    let adopted = app.show_ok(&id).await;
    assert_eq!(adopted["status"], "RUNNING", "adopted after the restart");
    assert_eq!(
        Lab::of(&app, &adopted).await.execute("1+1").await.trim(),
        "2"
    );
    stop_and_delete(&app, &id).await;

    // Nothing outside the attacker's notebook was deleted or killed.
    assert_eq!(
        std::fs::read_to_string(canary.path().join("keep")).unwrap(),
        "host data"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{victim_pid}")).exists()
            && victim.try_wait().unwrap().is_none(),
        "the host process lives"
    );
    assert_eq!(
        std::fs::read_to_string(neighbour_volume.join("precious.txt")).unwrap(),
        "mine"
    );
    let neighbour_now = app.show_ok(&neighbour).await;
    assert_eq!(neighbour_now["status"], "RUNNING");
    assert_eq!(
        Lab::of(&app, &neighbour_now)
            .await
            .execute("6*7")
            .await
            .trim(),
        "42"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    app.stop(&neighbour).await;
    app.wait_status(&neighbour, "STOPPED", Duration::from_secs(30))
        .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_hits_its_own_limit_and_the_neighbour_keeps_running() {
    let test = "a_fork_bomb_hits_its_own_limit_and_the_neighbour_keeps_running";
    if !local_runtime_available(test) {
        return;
    }
    let app = TestApp::builder().local().spawn().await;
    let bomber = id_of(&app.create_notebook(&efs_body("bomber")).await).to_owned();
    let neighbour = id_of(&app.create_notebook(&efs_body("calm")).await).to_owned();
    let bomber_lab = Lab::of(
        &app,
        &app.wait_status(&bomber, "RUNNING", FIRST_START).await,
    )
    .await;
    let neighbour_lab = Lab::of(
        &app,
        &app.wait_status(&neighbour, "RUNNING", Duration::from_secs(120))
            .await,
    )
    .await;
    // Fork until the kernel says no; the children sleep, then exit by themselves.
    let forked = bomber_lab
        .execute(
            r#"
import os, time
n = 0
try:
    while n < 5000:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, e.errno)
"#,
        )
        .await;
    let mut fields = forked.split_whitespace();
    let count: u32 = fields.next().unwrap_or("0").parse().unwrap_or(0);
    assert!(
        count > 0 && count < 1024,
        "the pids limit (1024) stopped the bomb: {forked}"
    );
    assert_eq!(fields.next(), Some("11"), "EAGAIN: {forked}");
    // The neighbour answers and runs code meanwhile.
    assert_eq!(neighbour_lab.execute("6*7").await.trim(), "42");
    assert_eq!(app.show_ok(&neighbour).await["status"], "RUNNING");
    for id in [&bomber, &neighbour] {
        app.stop(id).await;
        app.wait_status(id, "STOPPED", Duration::from_secs(60))
            .await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_efs_volume_has_a_quota_the_notebook_cannot_pass_and_older_volumes_move_in_whole() {
    let test = "an_efs_volume_has_a_quota_the_notebook_cannot_pass_and_older_volumes_move_in_whole";
    if !local_runtime_available(test) {
        return;
    }
    let (_owned, data_dir) = data_dir_in_tempdir();
    // An EFS volume from before quotas: a plain directory with the user's files.
    let app = TestApp::builder()
        .local()
        .efs_quota_gb(0)
        .data_dir(&data_dir)
        .spawn()
        .await;
    let id = id_of(&app.create_notebook(&efs_body("filler")).await).to_owned();
    let lab = Lab::of(&app, &app.wait_status(&id, "RUNNING", FIRST_START).await).await;
    assert_eq!(lab.put_file("before.txt", "kept").await, 201);
    assert_eq!(
        lab.execute(
            "import os; os.makedirs('deep/er'); open('deep/er/x', 'w').write('y'); print('ok')"
        )
        .await
        .trim(),
        "ok"
    );
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(30))
        .await;
    app.shutdown().await;

    // With a 1 GB quota the next start moves it into its image; the files are all there.
    let app = TestApp::builder()
        .local()
        .efs_quota_gb(1)
        .data_dir(&data_dir)
        .spawn()
        .await;
    app.start(&id).await;
    let lab = Lab::of(
        &app,
        &app.wait_status(&id, "RUNNING", Duration::from_secs(120))
            .await,
    )
    .await;
    assert_eq!(lab.read_file("before.txt").await.as_deref(), Some("kept"));
    assert_eq!(lab.read_file("deep/er/x").await.as_deref(), Some("y"));
    let filled = lab
        .execute(
            r#"
import errno, os
s = os.statvfs("/home/ma-user/work")
written = 0
chunk = b"x" * (8 << 20)
try:
    with open("/home/ma-user/work/fill", "wb") as f:
        while written < (3 << 30):
            f.write(chunk)
            written += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    print("no limit", written)
except OSError as e:
    print(errno.errorcode[e.errno], written, s.f_blocks * s.f_frsize)
"#,
        )
        .await;
    let fields: Vec<&str> = filled.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"ENOSPC"), "{filled}");
    let written: u64 = fields[1].parse().unwrap();
    let size: u64 = fields[2].parse().unwrap();
    assert!(written <= 1 << 30, "stopped at the quota: {filled}");
    assert!(
        size <= 1 << 30 && size > 900 << 20,
        "a 1 GB filesystem: {filled}"
    );
    // ShowNotebook reports what the volume holds.
    let used = app.show_ok(&id).await["volume"]["used_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(used > 900 << 20, "used_bytes {used}");
    // The notebook still works, and it cannot remount or grow its volume.
    assert_eq!(lab.execute("6*7").await.trim(), "42");
    assert!(
        lab.execute("import subprocess; print(subprocess.run(['mount', '-o', 'remount,size=10G', '/home/ma-user/work'], capture_output=True).returncode)")
            .await
            .trim()
            != "0"
    );
    assert_eq!(
        lab.execute("import os; os.remove('/home/ma-user/work/fill'); print('freed')")
            .await
            .trim(),
        "freed"
    );
    stop_and_delete(&app, &id).await;
    assert!(
        !data_dir
            .join("volumes")
            .join(format!("{id}.efs.ext4"))
            .exists()
    );
    assert!(!data_dir.join("volumes").join(&id).exists());
    app.shutdown().await;
}
