//! The gateway in front of a small HTTP server on a Unix socket (a stand-in for JupyterLab,
//! which the server's `local` tests put there for real): connection reuse, bodies both ways,
//! upstreams that drop connections, clients that leave early, and upgrade tunnels.
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atelier_domain::{NotebookId, Upstream};
use atelier_gateway::{Addressing, Gateway, Routing};
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
/// `GET …/headers` with the request target and headers it received (one `name: value` a line),
/// `GET …/cookie` with a `Set-Cookie` that tries to reach the parent domain, and
/// `Upgrade: echo` requests with a tunnel that sends every byte back. With `keep_alive`
/// off it closes every connection after one response.
async fn upstream(path: &Path, keep_alive: bool) {
    let listener = UnixListener::bind(path).expect("bind upstream");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_upstream(stream, keep_alive));
        }
    });
}

/// The same stand-in on a TCP port (as a pod would listen); returns its address.
async fn tcp_upstream(keep_alive: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_upstream(stream, keep_alive));
        }
    });
    address
}

async fn serve_upstream<S>(stream: S, keep_alive: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(answer);
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(keep_alive)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
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
    if path.ends_with("/cookie") {
        let response = Response::builder()
            .header(
                "set-cookie",
                "session=1; Domain=localhost; Path=/; SameSite=None",
            )
            .body(Full::new(Bytes::from_static(b"ok")))
            .expect("response");
        return Ok(response);
    }
    let body = if path.ends_with("/headers") {
        let mut text = format!("target: {}\n", request.uri());
        for (name, value) in request.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        Bytes::from(text)
    } else if path.ends_with("/big") {
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
    routing: Routing,
    _dir: tempfile::TempDir,
    /// Stops the gateway's thread when the test ends.
    _stop: tokio_util::sync::DropGuard,
}

impl Setup {
    async fn new(keep_alive: bool) -> Setup {
        Setup::with_routing(keep_alive, Routing::Host).await
    }

    async fn with_routing(keep_alive: bool, routing: Routing) -> Setup {
        Setup::build(keep_alive, routing, Duration::ZERO).await
    }

    /// With busy polling (opt-in): the gateway on a thread of its own.
    async fn busy_polling(keep_alive: bool) -> Setup {
        Setup::build(keep_alive, Routing::Host, Duration::from_millis(1)).await
    }

    async fn build(keep_alive: bool, routing: Routing, busy_poll: Duration) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket: PathBuf = dir.path().join("jupyter.sock");
        upstream(&socket, keep_alive).await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        // As `atelier serve` runs it, each notebook at `http://{id}.localhost:PORT`; with a
        // busy-poll window, on a thread of its own.
        let busy_poll = atelier_gateway::BusyPoll::new(busy_poll);
        let gateway = Gateway::with_busy_poll(
            atelier_gateway::system_clock(),
            busy_poll,
            Addressing::local(address.port(), routing),
        );
        let id = NotebookId::new_random();
        gateway.set_route(id, Upstream::Unix(socket), TOKEN.to_owned());
        let stop = tokio_util::sync::CancellationToken::new();
        let _ended = gateway
            .clone()
            .serve(listener, stop.clone())
            .expect("serve");
        Setup {
            gateway,
            address,
            id,
            routing,
            _dir: dir,
            _stop: stop.drop_guard(),
        }
    }

    /// The notebook's own host, `{id}.localhost:PORT`.
    fn host(&self) -> String {
        format!("{}.localhost:{}", self.id, self.address.port())
    }

    fn url(&self, rest: &str) -> String {
        match self.routing {
            Routing::Host => format!("http://{}/{rest}", self.host()),
            Routing::Path => format!(
                "http://localhost:{}/{}/{rest}",
                self.address.port(),
                self.id
            ),
        }
    }

    /// A client that finds `*.localhost` on loopback, as browsers do, and does not follow
    /// redirects.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .resolve(&format!("{}.localhost", self.id), self.address)
            .resolve("localhost", self.address)
            .redirect(reqwest::redirect::Policy::none())
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
    for setup in [Setup::new(true).await, Setup::busy_polling(true).await] {
        sequential_requests_reuse_one_upstream_connection_on(setup).await;
    }
}

async fn sequential_requests_reuse_one_upstream_connection_on(setup: Setup) {
    let client = setup.client();
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
    let client = setup.client();
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
    let client = setup.client();
    for _ in 0..20 {
        get_ok(&client, &setup).await;
    }
    assert_eq!(setup.gateway.stats().upstream_connects, 20);
}

#[tokio::test]
async fn request_bodies_reach_the_notebook_and_are_counted() {
    let setup = Setup::new(true).await;
    let client = setup.client();
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
        "GET /big HTTP/1.1\r\nhost: {}\r\nauthorization: token {TOKEN}\r\n\r\n",
        setup.host()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut buffer = [0u8; 4096];
    let read = tcp.read(&mut buffer).await.expect("read");
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = setup.client();
    for _ in 0..5 {
        get_ok(&client, &setup).await;
    }
    // The abandoned connection was not pooled: one for it, one for the rest.
    assert_eq!(setup.gateway.stats().upstream_connects, 2);
}

#[tokio::test]
async fn upgrades_are_spliced_and_closed_with_the_route() {
    for setup in [Setup::new(true).await, Setup::busy_polling(true).await] {
        upgrades_are_spliced_and_closed_with_the_route_on(setup).await;
    }
}

async fn upgrades_are_spliced_and_closed_with_the_route_on(setup: Setup) {
    let mut tcp = TcpStream::connect(setup.address).await.expect("connect");
    let head = format!(
        "GET /tunnel HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: echo\r\n\
         authorization: token {TOKEN}\r\n\r\n",
        setup.host()
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

/// Sends `GET path` with `headers` to the gateway and returns the status, headers and body.
async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

#[tokio::test]
async fn only_the_notebooks_own_host_reaches_it() {
    let setup = Setup::new(true).await;
    let port = setup.address.port();
    let other = NotebookId::new_random();
    let client = reqwest::Client::builder()
        .resolve(&format!("{other}.localhost"), setup.address)
        .resolve("localhost", setup.address)
        .resolve("evil.localhost", setup.address)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let token = format!("token {TOKEN}");
    let auth = [("authorization", token.as_str())];
    // A notebook that is not running, the bare host, another host: nothing there.
    for url in [
        format!("http://{other}.localhost:{port}/echo"),
        format!("http://localhost:{port}/echo"),
        format!("http://evil.localhost:{port}/echo"),
    ] {
        let (status, _, body) = send(&client, &url, &auth).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}: {body}");
        assert!(body.contains("error_code"), "{body}");
    }
    // The old path form on the bare host moves to the notebook's own origin.
    let url = format!("http://localhost:{port}/{}/lab/tree?reset", setup.id);
    let (status, headers, _) = send(&client, &url, &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        headers["location"],
        format!("http://{}/lab/tree?reset", setup.host()).as_str()
    );
    // On the notebook's own host, `/{id}/…` is just a path of that notebook: forwarded, not
    // redirected.
    let (status, _, body) = send(
        &setup.client(),
        &setup.url(&format!("{}/echo", setup.id)),
        &auth,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn a_tcp_upstream_is_proxied_and_its_connections_reused() {
    let one = Setup::new(true).await;
    let address = tcp_upstream(true).await;
    // A notebook on a TCP address (a pod's) beside the one on a Unix socket.
    let pod = NotebookId::new_random();
    one.gateway
        .set_route(pod, Upstream::Tcp(address), TOKEN.to_owned());
    let client = reqwest::Client::builder()
        .resolve(&format!("{pod}.localhost"), one.address)
        .build()
        .expect("client");
    let before = one.gateway.stats().upstream_connects;
    for _ in 0..5 {
        let response = client
            .get(format!(
                "http://{pod}.localhost:{}/echo",
                one.address.port()
            ))
            .header("authorization", format!("token {TOKEN}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&response.bytes().await.expect("body")[..], b"ok");
    }
    assert_eq!(one.gateway.stats().upstream_connects, before + 1);
}

#[tokio::test]
async fn a_token_opens_one_notebook_only() {
    let one = Setup::new(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("jupyter.sock");
    upstream(&socket, true).await;
    // A second notebook on the first gateway, with a token of its own.
    let neighbour = NotebookId::new_random();
    one.gateway.set_route(
        neighbour,
        Upstream::Unix(socket),
        "neighbour-token".to_owned(),
    );
    let client = reqwest::Client::builder()
        .resolve(&format!("{neighbour}.localhost"), one.address)
        .build()
        .expect("client");
    let url = format!("http://{neighbour}.localhost:{}/echo", one.address.port());
    for presented in [
        vec![("authorization", format!("token {TOKEN}"))],
        vec![("cookie", format!("atelier-token={TOKEN}"))],
    ] {
        let headers: Vec<(&str, &str)> = presented.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, _, body) = send(&client, &url, &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{presented:?}: {body}");
    }
    let (status, _, _) = send(&client, &format!("{url}?token={TOKEN}"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(&client, &url, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = send(&client, &format!("{url}?token=neighbour-token"), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn a_token_link_sets_a_host_only_http_only_lax_cookie_that_then_suffices() {
    let setup = Setup::new(true).await;
    let client = setup.client();
    let (status, headers, _) = send(
        &client,
        &format!("{}?token={TOKEN}", setup.url("echo")),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers["set-cookie"].to_str().expect("ascii");
    assert_eq!(
        cookie,
        format!("atelier-token={TOKEN}; Path=/; HttpOnly; SameSite=Lax")
    );
    let jar = format!("atelier-token={TOKEN}");
    let own_origin = format!("http://{}", setup.host());
    // The browser's own requests: same-origin fetches, WebSocket handshakes, navigations.
    for headers in [
        vec![("cookie", jar.as_str())],
        vec![
            ("cookie", jar.as_str()),
            ("origin", own_origin.as_str()),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ],
        vec![
            ("cookie", jar.as_str()),
            ("sec-fetch-site", "none"),
            ("sec-fetch-mode", "navigate"),
        ],
        // A link from another site opens the notebook (a top-level navigation).
        vec![
            ("cookie", jar.as_str()),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ],
    ] {
        let (status, _, body) = send(&client, &setup.url("echo"), &headers).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok"),
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn cookie_requests_from_another_origin_are_refused() {
    let setup = Setup::new(true).await;
    let client = setup.client();
    let jar = format!("atelier-token={TOKEN}");
    let sibling = format!(
        "http://{}.localhost:{}",
        NotebookId::new_random(),
        setup.address.port()
    );
    for headers in [
        // A sibling notebook's page fetching with credentials: same site, so the cookie goes.
        vec![("cookie", jar.as_str()), ("origin", sibling.as_str())],
        vec![
            ("cookie", jar.as_str()),
            ("origin", sibling.as_str()),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "cors"),
        ],
        // ...framing the notebook, or loading it as a script or image.
        vec![
            ("cookie", jar.as_str()),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "iframe"),
        ],
        vec![
            ("cookie", jar.as_str()),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "script"),
        ],
        // The same origin over the other scheme is another origin.
        vec![
            ("cookie", jar.as_str()),
            ("origin", &format!("https://{}", setup.host())),
        ],
    ] {
        let (status, _, body) = send(&client, &setup.url("echo"), &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        assert!(body.contains("Cross-origin"), "{body}");
    }
    // A WebSocket handshake from a sibling's page is refused before it reaches the notebook.
    let mut tcp = TcpStream::connect(setup.address).await.expect("connect");
    let head = format!(
        "GET /tunnel HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: echo\r\n\
         cookie: {jar}\r\norigin: {sibling}\r\n\r\n",
        setup.host()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut buffer = [0u8; 512];
    let read = tcp.read(&mut buffer).await.expect("read");
    assert!(
        buffer[..read].starts_with(b"HTTP/1.1 403"),
        "{:?}",
        String::from_utf8_lossy(&buffer[..read])
    );
    assert_eq!(setup.gateway.stats().open_tunnels, 0);
}

#[tokio::test]
async fn a_token_header_works_from_any_origin() {
    // Non-browser clients (VS Code, websocket-client) send an Origin of their own and the
    // token in a header: a page elsewhere cannot know the token, so this is not a forgery.
    let setup = Setup::new(true).await;
    let token = format!("token {TOKEN}");
    let (status, _, body) = send(
        &setup.client(),
        &setup.url("echo"),
        &[
            ("authorization", token.as_str()),
            ("origin", "vscode-file://vscode-app"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn the_notebook_sees_the_browsers_host_and_forwarded_headers_it_can_trust() {
    let setup = Setup::new(true).await;
    let token = format!("token {TOKEN}");
    let (status, _, body) = send(
        &setup.client(),
        &format!("{}?x=1", setup.url("headers")),
        &[
            ("authorization", token.as_str()),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "10.8.8.8"),
            ("x-scheme", "https"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=10.7.7.7;host=evil.example"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: Vec<&str> = body.lines().collect();
    assert!(seen.contains(&"target: /headers?x=1"), "{body}");
    assert!(
        seen.contains(&format!("host: {}", setup.host()).as_str()),
        "{body}"
    );
    // The public scheme is the gateway's, whatever the client claimed; the address the
    // gateway saw comes last.
    assert!(seen.contains(&"x-forwarded-proto: http"), "{body}");
    assert!(
        seen.contains(&"x-forwarded-for: 10.9.9.9, 127.0.0.1"),
        "{body}"
    );
    for spoofed in ["x-forwarded-host", "x-real-ip", "x-scheme", "forwarded:"] {
        assert!(
            !body.contains(spoofed),
            "{spoofed} reached the notebook: {body}"
        );
    }
}

#[tokio::test]
async fn a_notebooks_cookies_stay_on_its_host() {
    let setup = Setup::new(true).await;
    let token = format!("token {TOKEN}");
    let (status, headers, _) = send(
        &setup.client(),
        &setup.url("cookie"),
        &[("authorization", token.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["set-cookie"], "session=1; Path=/; SameSite=Lax");
}

#[tokio::test]
async fn path_routing_serves_notebooks_under_their_id() {
    let setup = Setup::with_routing(true, Routing::Path).await;
    let client = setup.client();
    get_ok(&client, &setup).await;
    let (status, headers, _) = send(
        &client,
        &format!("{}?token={TOKEN}", setup.url("echo")),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["set-cookie"],
        format!(
            "atelier-token={TOKEN}; Path=/{}/; HttpOnly; SameSite=Lax",
            setup.id
        )
        .as_str()
    );
    let other = format!(
        "http://localhost:{}/{}/echo",
        setup.address.port(),
        NotebookId::new_random()
    );
    let (status, _, _) = send(&client, &other, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
