//! Test helpers (feature `testing`): Debian's distribution registry on a loopback port, and
//! images pushed to it, built in the test (nothing is ever pulled from the internet).
// A test helper: it waits on a real process with a deadline.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// Debian's `docker-registry` (the CNCF distribution registry).
pub const REGISTRY: &str = "/usr/bin/docker-registry";

/// A distribution registry on a free loopback port, storing into a temporary directory.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`: the registry part of its references.
    pub host: String,
}

impl Registry {
    /// Starts Debian's `docker-registry` and waits until it answers.
    pub async fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut file = std::fs::File::create(&config).unwrap();
        write!(
            file,
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        )
        .unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry { child, dir, host };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = reqwest::Client::new()
                .get(format!("http://{}/v2/", registry.host))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return registry;
            }
            assert!(Instant::now() < deadline, "the registry never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The file the registry keeps a blob in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gzipped layer with `files` (path, contents), as `docker build` would push it.
pub fn layer(files: &[(&str, &str)]) -> ImageLayer {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_cksum();
        builder
            .append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    ImageLayer::oci_v1_gzip(gz.finish().unwrap(), None)
}

/// Pushes an image of `layers` for `linux/{arch}` as `repository:tag`.
pub async fn push(registry: &Registry, name: &str, arch: &str, layers: Vec<ImageLayer>) -> String {
    let reference: Reference = format!("{}/{name}", registry.host).parse().unwrap();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"User": "1000", "WorkingDir": "/home/ma-user/work"},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    client
        .push(
            &reference,
            &layers,
            Config::oci_v1(serde_json::to_vec(&config).unwrap(), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push");
    format!("{}/{name}", registry.host)
}
