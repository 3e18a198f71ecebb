//! A real S3-compatible object store for the storage tests: Garage (`garage` on `PATH`, or
//! `GARAGE_BIN`), one node on loopback with SQLite metadata, a key and a bucket.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Garage {
    child: Child,
    _dir: tempfile::TempDir,
    config: PathBuf,
    bin: PathBuf,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The binary, if this host has one.
pub fn garage_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        return Some(PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|candidate| candidate.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Garage {
    /// Starts Garage and makes `buckets`, all readable and writable with one key.
    pub fn start(buckets: &[&str]) -> Garage {
        let bin = garage_bin().expect("garage is not installed (cargo install garage)");
        let dir = tempfile::tempdir().expect("temp dir");
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
                secret = hex(32),
                token = hex(16),
            ),
        )
        .expect("garage config");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("log");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("garage starts");
        let garage = Garage {
            child,
            _dir: dir,
            config,
            bin,
            endpoint: format!("http://127.0.0.1:{s3}"),
            access_key_id: format!("GK{}", hex(12)),
            secret_access_key: hex(32),
        };
        // Its node id, once the RPC layer answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = loop {
            let output = garage.cli(&["node", "id", "-q"], false);
            if let Some(id) = output.lines().next().and_then(|l| l.split('@').next())
                && id.len() >= 16
                && id.bytes().all(|b| b.is_ascii_hexdigit())
            {
                break id.to_owned();
            }
            assert!(Instant::now() < deadline, "garage did not start: {output}");
            std::thread::sleep(Duration::from_millis(100));
        };
        // The key file comes before the RPC listener: the first command may be early.
        loop {
            let assign = ["layout", "assign", "-z", "dc1", "-c", "1G", &node];
            let output = garage.cli(&assign, false);
            if garage.cli(&["layout", "show"], false).contains("dc1") {
                break;
            }
            assert!(Instant::now() < deadline, "garage layout: {output}");
            std::thread::sleep(Duration::from_millis(100));
        }
        garage.cli(&["layout", "apply", "--version", "1"], true);
        let (key, secret) = (
            garage.access_key_id.clone(),
            garage.secret_access_key.clone(),
        );
        garage.cli(
            &["key", "import", "--yes", "-n", "atelier", &key, &secret],
            true,
        );
        for bucket in buckets {
            garage.cli(&["bucket", "create", bucket], true);
            garage.cli(
                &[
                    "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", &key,
                ],
                true,
            );
        }
        garage
    }

    /// Runs the CLI against this server; with `check`, it must succeed.
    pub fn cli(&self, args: &[&str], check: bool) -> String {
        let output = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("garage cli");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!check || output.status.success(), "garage {args:?}: {text}");
        text
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
