//! The gateway in front of a small HTTP server on a Unix socket (a stand-in for JupyterLab,
//! which the server's `local` tests put there for real): connection reuse, bodies both ways,
//! upstreams that drop connections, clients that leave early, and upgrade tunnels.
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atelier_domain::NotebookId;
use atelier_gateway::Gateway;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

const TOKEN: &str = "secret-token";
const BIG: usize = 1024 * 1024;

/// Answers `GET …/echo` with `ok`, `GET …/big` with 1 MiB, `POST …/len` with the body's length,
/// and `Upgrade: echo` requests with a tunnel that sends every byte back. With `keep_alive`
/// off it closes every connection after one response.
async fn upstream(path: &Path, keep_alive: bool) {
    let listener = UnixListener::bind(path).expect("bind upstream");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

async fn answer(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if request.headers().get("upgrade").is_some() {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buffer = [0u8; 1024];
            while let Ok(n) = io.read(&mut buffer).await {
                if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::default())
            .expect("response");
        return Ok(response);
    }
    let body = if path.ends_with("/big") {
        Bytes::from(vec![b'x'; BIG])
    } else if path.ends_with("/len") {
        let received = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len());
        Bytes::from(received.unwrap_or(0).to_string())
    } else {
        Bytes::from_static(b"ok")
    };
    Ok(Response::new(Full::new(body)))
}

struct Setup {
    gateway: Arc<Gateway>,
    address: std::net::SocketAddr,
    id: NotebookId,
    _dir: tempfile::TempDir,
    /// Stops the gateway's thread when the test ends.
    _stop: tokio_util::sync::DropGuard,
}

impl Setup {
    async fn new(keep_alive: bool) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket: PathBuf = dir.path().join("jupyter.sock");
        upstream(&socket, keep_alive).await;
        // As `atelier serve` runs it: on its own thread, busy polling after HTTP traffic.
        let busy_poll = atelier_gateway::BusyPoll::new(Duration::from_millis(1));
        let gateway = Gateway::with_busy_poll(atelier_gateway::system_clock(), busy_poll);
        let id = NotebookId::new_random();
        gateway.set_route(id, socket, TOKEN.to_owned());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = tokio_util::sync::CancellationToken::new();
        let _ended = gateway
            .clone()
            .serve(listener, stop.clone())
            .expect("serve");
        Setup {
            gateway,
            address,
            id,
            _dir: dir,
            _stop: stop.drop_guard(),
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/{}/{rest}", self.address, self.id)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client")
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (StatusCode, Bytes) {
    let response = client
        .get(url)
        .header("authorization", format!("token {TOKEN}"))
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.bytes().await.expect("body"))
}

/// GET `…/echo`, which must answer 200 `ok`.
async fn get_ok(client: &reqwest::Client, setup: &Setup) {
    let (status, body) = get(client, &setup.url("echo")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let setup = Setup::new(true).await;
    let client = Setup::client();
    for _ in 0..50 {
        get_ok(&client, &setup).await;
    }
    // A large body read to the end also hands its connection back.
    for _ in 0..3 {
        let (status, body) = get(&client, &setup.url("big")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), BIG);
    }
    let stats = setup.gateway.stats();
    assert_eq!(stats.requests, 53);
    assert_eq!(stats.upstream_connects, 1, "{stats:?}");
    assert!(stats.bytes_from_notebook >= 3 * BIG as u64 + 100);
}

#[tokio::test]
async fn concurrent_requests_open_at_most_one_connection_each() {
    let setup = Setup::new(true).await;
    let client = Setup::client();
    let url = setup.url("echo");
    for _ in 0..5 {
        let rounds = (0..8).map(|_| get(&client, &url));
        for (status, body) in futures_util::future::join_all(rounds).await {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"ok");
        }
    }
    let connects = setup.gateway.stats().upstream_connects;
    assert!(
        (1..=8).contains(&connects),
        "{connects} connections for 8 at once"
    );
}

#[tokio::test]
async fn an_upstream_that_closes_every_connection_still_answers_every_request() {
    let setup = Setup::new(false).await;
    let client = Setup::client();
    for _ in 0..20 {
        get_ok(&client, &setup).await;
    }
    assert_eq!(setup.gateway.stats().upstream_connects, 20);
}

#[tokio::test]
async fn request_bodies_reach_the_notebook_and_are_counted() {
    let setup = Setup::new(true).await;
    let client = Setup::client();
    let payload = vec![b'y'; 300_000];
    let response = client
        .post(setup.url("len"))
        .header("authorization", format!("token {TOKEN}"))
        .body(payload.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "300000");
    assert_eq!(setup.gateway.stats().bytes_to_notebook, 300_000);
}

#[tokio::test]
async fn a_client_leaving_mid_body_costs_only_its_own_connection() {
    let setup = Setup::new(true).await;
    // Read the head of a 1 MiB answer, then hang up.
    let mut tcp = TcpStream::connect(setup.address).await.expect("connect");
    let head = format!(
        "GET /{}/big HTTP/1.1\r\nhost: x\r\nauthorization: token {TOKEN}\r\n\r\n",
        setup.id
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut buffer = [0u8; 4096];
    let read = tcp.read(&mut buffer).await.expect("read");
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = Setup::client();
    for _ in 0..5 {
        get_ok(&client, &setup).await;
    }
    // The abandoned connection was not pooled: one for it, one for the rest.
    assert_eq!(setup.gateway.stats().upstream_connects, 2);
}

#[tokio::test]
async fn upgrades_are_spliced_and_closed_with_the_route() {
    let setup = Setup::new(true).await;
    let mut tcp = TcpStream::connect(setup.address).await.expect("connect");
    let head = format!(
        "GET /{}/tunnel HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\
         authorization: token {TOKEN}\r\n\r\n",
        setup.id
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.expect("read"), 1);
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "{response:?}");
    for message in [&b"hello"[..], &[7u8; 3000][..]] {
        tcp.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tcp.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
    assert_eq!(setup.gateway.stats().open_tunnels, 1);
    assert_eq!(setup.gateway.stats().bytes_to_notebook, 3005);
    let (active, tunnel_open) = setup.gateway.activity(&setup.id).expect("route");
    assert!(tunnel_open && active > 0);

    setup.gateway.remove_route(&setup.id);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
}
