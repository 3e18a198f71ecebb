//! The notebook gateway: `/{notebook_id}/…` on its own listener, proxied to the notebook's
//! JupyterLab, which listens on a Unix socket only the gateway reaches.
//!
//! It checks the notebook's access token (`?token=`, `Authorization: token …` or the
//! path-scoped cookie it sets), streams bodies both ways without buffering, splices WebSocket
//! upgrades, and records the last activity of every notebook.
//!
//! **Architecture Invariant:** the gateway never buffers bodies or parses WebSocket frames.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body_util::BodyExt as _;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use atelier_domain::NotebookId;

mod busy_poll;
pub use busy_poll::BusyPoll;

/// The cookie that carries the token after a `?token=` visit (scoped to `/{id}/`).
pub const TOKEN_COOKIE: &str = "atelier-token";

/// Where one notebook is reached, and with which token.
pub struct Route {
    pub socket: PathBuf,
    pub token: String,
    /// Cancelled when the route goes away: closes the notebook's WebSocket tunnels.
    tunnels: CancellationToken,
    last_activity_ms: AtomicI64,
    open_tunnels: AtomicUsize,
    clock: Clock,
    /// Idle keep-alive connections to the notebook's socket, reused by the next requests.
    idle: std::sync::Mutex<Vec<Upstream>>,
    busy_poll: Arc<BusyPoll>,
}

type Upstream = hyper::client::conn::http1::SendRequest<Body>;

/// Idle connections kept per notebook.
const MAX_IDLE: usize = 64;

impl Route {
    fn take_idle(&self) -> Option<Upstream> {
        let mut idle = self.idle.lock().expect("poisoned");
        while let Some(upstream) = idle.pop() {
            if upstream.is_ready() && !upstream.is_closed() {
                return Some(upstream);
            }
        }
        None
    }

    fn put_idle(&self, upstream: Upstream) {
        let mut idle = self.idle.lock().expect("poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(upstream);
        }
    }

    /// A new connection to the notebook's socket.
    async fn connect(&self, id: &NotebookId, gateway: &Gateway) -> Result<Upstream, Response> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|cause| {
            tracing::warn!(notebook_id = %id, %cause, "notebook socket unreachable");
            error(StatusCode::BAD_GATEWAY, "The notebook is not answering.")
        })?;
        gateway.upstream_connects.fetch_add(1, Ordering::Relaxed);
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
                .await
                .map_err(|cause| {
                    tracing::warn!(notebook_id = %id, %cause, "handshake with notebook failed");
                    error(StatusCode::BAD_GATEWAY, "The notebook is not answering.")
                })?;
        tokio::spawn(async move {
            if let Err(cause) = connection.with_upgrades().await {
                tracing::debug!(%cause, "notebook connection ended");
            }
        });
        Ok(sender)
    }

    fn touch(&self) {
        self.last_activity_ms
            .store((self.clock)(), Ordering::Relaxed);
    }
}

/// Epoch milliseconds; the control plane passes its own clock so activity and leases agree.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Wall-clock epoch milliseconds, the clock of [`Gateway::new`].
pub fn system_clock() -> Clock {
    Arc::new(system_now_ms)
}

fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The route table. Routes change in microseconds and live in memory only: the control plane
/// re-registers them from the store at boot.
pub struct Gateway {
    routes: RwLock<HashMap<NotebookId, Arc<Route>>>,
    clock: Clock,
    requests: AtomicU64,
    bytes_to_notebook: AtomicU64,
    bytes_from_notebook: AtomicU64,
    upstream_connects: AtomicU64,
    busy_poll: Arc<BusyPoll>,
}

/// Totals since the gateway started (the control plane's `/metrics`).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayStats {
    pub requests: u64,
    /// Request bodies and WebSocket bytes.
    pub bytes_to_notebook: u64,
    /// Response bodies and WebSocket bytes.
    pub bytes_from_notebook: u64,
    pub open_tunnels: usize,
    /// Connections opened to notebook sockets (the other requests reused a pooled one).
    pub upstream_connects: u64,
    /// Time the gateway's event loop spent polling instead of sleeping.
    pub busy_poll: std::time::Duration,
}

impl Gateway {
    /// A gateway recording activity in wall-clock time.
    pub fn new() -> Arc<Gateway> {
        Gateway::with_clock(system_clock())
    }

    pub fn with_clock(clock: Clock) -> Arc<Gateway> {
        Gateway::with_busy_poll(clock, BusyPoll::off())
    }

    /// A gateway whose event loop, when [`Gateway::serve`]d, busy-polls after HTTP traffic.
    pub fn with_busy_poll(clock: Clock, busy_poll: Arc<BusyPoll>) -> Arc<Gateway> {
        Arc::new(Gateway {
            busy_poll,
            routes: RwLock::new(HashMap::new()),
            clock,
            requests: AtomicU64::new(0),
            bytes_to_notebook: AtomicU64::new(0),
            bytes_from_notebook: AtomicU64::new(0),
            upstream_connects: AtomicU64::new(0),
        })
    }

    /// Points `/{id}/` at `socket`, accepting `token`. Replaces (and disconnects) an older route.
    pub fn set_route(&self, id: NotebookId, socket: PathBuf, token: String) {
        let route = Arc::new(Route {
            socket,
            token,
            tunnels: CancellationToken::new(),
            last_activity_ms: AtomicI64::new((self.clock)()),
            open_tunnels: AtomicUsize::new(0),
            clock: self.clock.clone(),
            idle: std::sync::Mutex::new(Vec::new()),
            busy_poll: self.busy_poll.clone(),
        });
        if let Some(old) = self.routes.write().expect("poisoned").insert(id, route) {
            old.tunnels.cancel();
        }
    }

    pub fn stats(&self) -> GatewayStats {
        GatewayStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_to_notebook: self.bytes_to_notebook.load(Ordering::Relaxed),
            bytes_from_notebook: self.bytes_from_notebook.load(Ordering::Relaxed),
            upstream_connects: self.upstream_connects.load(Ordering::Relaxed),
            busy_poll: self.busy_poll.spun(),
            open_tunnels: self
                .routes
                .read()
                .map(|routes| {
                    routes
                        .values()
                        .map(|r| r.open_tunnels.load(Ordering::Relaxed))
                        .sum()
                })
                .unwrap_or(0),
        }
    }

    /// Forgets the route and closes its open WebSocket tunnels.
    pub fn remove_route(&self, id: &NotebookId) {
        if let Some(old) = self.routes.write().expect("poisoned").remove(id) {
            old.tunnels.cancel();
        }
    }

    pub fn has_route(&self, id: &NotebookId) -> bool {
        self.routes.read().expect("poisoned").contains_key(id)
    }

    /// Epoch ms of the last request or WebSocket byte for the notebook, and whether a
    /// WebSocket (kernel channel, terminal) is open right now.
    pub fn activity(&self, id: &NotebookId) -> Option<(i64, bool)> {
        let routes = self.routes.read().expect("poisoned");
        routes.get(id).map(|route| {
            (
                route.last_activity_ms.load(Ordering::Relaxed),
                route.open_tunnels.load(Ordering::Relaxed) > 0,
            )
        })
    }

    /// Whether JupyterLab reports work in progress: a busy kernel or an open terminal. Idle
    /// culling must not stop such a notebook even when no traffic crosses the gateway.
    pub async fn jupyter_busy(&self, id: &NotebookId) -> bool {
        let Some(route) = self.route(id) else {
            return false;
        };
        let kernels = get_json(&route.socket, &format!("/{id}/api/kernels")).await;
        let busy_kernel = kernels
            .as_ref()
            .and_then(|k| k.as_array())
            .is_some_and(|kernels| {
                kernels
                    .iter()
                    .any(|kernel| kernel["execution_state"] == "busy")
            });
        if busy_kernel {
            return true;
        }
        let terminals = get_json(&route.socket, &format!("/{id}/api/terminals")).await;
        terminals
            .as_ref()
            .and_then(|t| t.as_array())
            .is_some_and(|t| !t.is_empty())
    }

    fn route(&self, id: &NotebookId) -> Option<Arc<Route>> {
        self.routes.read().expect("poisoned").get(id).cloned()
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(proxy).with_state(self)
    }

    /// Serves `listener` on a thread of its own ("atelier-gateway") with a single-threaded
    /// runtime, the one runtime [`BusyPoll`] can poll, until `shutdown` is cancelled. The
    /// receiver yields how serving ended.
    pub fn serve(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
        use axum::serve::ListenerExt as _;
        listener.set_nonblocking(true)?;
        let (done, ended) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("atelier-gateway".to_owned())
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            let listener = tokio::net::TcpListener::from_std(listener)?;
                            let poller = tokio::spawn(self.busy_poll.clone().run());
                            let served = axum::serve(listener.tap_io(no_delay), self.router())
                                .with_graceful_shutdown(shutdown.cancelled_owned())
                                .await;
                            poller.abort();
                            served
                        })
                    });
                let _ = done.send(served);
            })?;
        Ok(ended)
    }
}

/// Turns Nagle's algorithm off on an accepted connection. Small request/response exchanges
/// (kernel messages above all) would otherwise wait for delayed ACKs: ~40 ms per round trip.
pub fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// GET a JSON document from JupyterLab over its socket; `None` on any failure.
async fn get_json(socket: &std::path::Path, path: &str) -> Option<serde_json::Value> {
    use http_body_util::BodyExt;
    let stream = UnixStream::connect(socket).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = axum::http::Request::get(path)
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .ok()?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sender.send_request(request),
    )
    .await
    .ok()?
    .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "{{\"error_code\":\"{}\",\"error_msg\":\"{}\"}}",
        match status {
            StatusCode::UNAUTHORIZED => "ModelArts.0201",
            StatusCode::FORBIDDEN => "ModelArts.0203",
            StatusCode::BAD_GATEWAY => "ModelArts.6102",
            _ => "ModelArts.6404",
        },
        message
    );
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// How the request presented the token, if it did.
enum Presented {
    Query(String),
    Header(String),
    Cookie(String),
}

fn presented_token(uri: &Uri, headers: &HeaderMap) -> Option<Presented> {
    if let Some(query) = uri.query()
        && let Some((_, value)) =
            form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token")
    {
        return Some(Presented::Query(value.into_owned()));
    }
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = value.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("token")
        {
            return Some(Presented::Header(token.trim().to_owned()));
        }
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for cookie in cookies.split(';') {
            if let Some((name, value)) = cookie.trim().split_once('=')
                && name == TOKEN_COOKIE
            {
                return Some(Presented::Cookie(value.to_owned()));
            }
        }
    }
    None
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded, except the upgrade handshake.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// No body follows the head: no `Content-Length` (or 0) and no `Transfer-Encoding`.
fn body_is_empty(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

async fn proxy(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
    let path = request.uri().path();
    let Some(id_text) = path
        .strip_prefix('/')
        .map(|p| p.split('/').next().unwrap_or(""))
    else {
        return error(StatusCode::NOT_FOUND, "No notebook at this path.");
    };
    let Ok(id) = id_text.parse::<NotebookId>() else {
        return error(StatusCode::NOT_FOUND, "No notebook at this path.");
    };
    let Some(route) = gateway.route(&id) else {
        return error(StatusCode::NOT_FOUND, "The notebook is not running.");
    };
    let presented = presented_token(request.uri(), request.headers());
    let set_cookie = match &presented {
        None => return error(StatusCode::UNAUTHORIZED, "A token is required."),
        Some(Presented::Query(token) | Presented::Header(token) | Presented::Cookie(token)) => {
            if !atelier_auth::constant_time_eq(token.as_bytes(), route.token.as_bytes()) {
                return error(
                    StatusCode::FORBIDDEN,
                    "The token is not valid for this notebook.",
                );
            }
            matches!(presented, Some(Presented::Query(_)))
        }
    };
    route.touch();
    // The answer is expected within the busy-poll window: no sleep before it arrives...
    route.busy_poll.activity();
    gateway.requests.fetch_add(1, Ordering::Relaxed);

    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    strip_hop_by_hop(request.headers_mut(), upgrade);
    let forwarded_for = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    if let Some(ip) = forwarded_for
        && let Ok(value) = HeaderValue::from_str(&ip)
    {
        request.headers_mut().insert("x-forwarded-for", value);
    }
    // Jupyter checks that Host is local; the socket is, so say so.
    request
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("localhost"));

    let counted = gateway.clone();
    let request = request.map(|body| {
        Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counted
                    .bytes_to_notebook
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        }))
    });
    let pooled = if upgrade { None } else { route.take_idle() };
    // On a reused connection, a request without a body is kept to send again should the
    // connection turn out closed (the notebook may drop idle ones).
    let resend = (pooled.is_some() && body_is_empty(request.headers())).then(|| {
        (
            request.method().clone(),
            request.uri().clone(),
            request.headers().clone(),
        )
    });
    let mut sender = match pooled {
        Some(sender) => sender,
        None => match route.connect(&id, &gateway).await {
            Ok(sender) => sender,
            Err(response) => return response,
        },
    };
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(cause) => {
            let retry = match resend {
                Some((method, uri, headers)) => {
                    let mut again = Request::new(Body::empty());
                    *again.method_mut() = method;
                    *again.uri_mut() = uri;
                    *again.headers_mut() = headers;
                    Some(again)
                }
                _ => None,
            };
            let Some(again) = retry else {
                tracing::warn!(notebook_id = %id, %cause, "request to notebook failed");
                return error(StatusCode::BAD_GATEWAY, "The notebook is not answering.");
            };
            sender = match route.connect(&id, &gateway).await {
                Ok(sender) => sender,
                Err(response) => return response,
            };
            match sender.send_request(again).await {
                Ok(response) => response,
                Err(cause) => {
                    tracing::warn!(notebook_id = %id, %cause, "request to notebook failed");
                    return error(StatusCode::BAD_GATEWAY, "The notebook is not answering.");
                }
            }
        }
    };
    // ...nor before the client's next request on this connection.
    route.busy_poll.activity();
    if !upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Back to the pool once this response's body has been read.
        let route = route.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                route.put_idle(sender);
            }
        });
    }

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return error(StatusCode::BAD_GATEWAY, "Unexpected protocol switch.");
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let route = route.clone();
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok(pair) => pair,
                Err(cause) => {
                    tracing::debug!(%cause, "upgrade failed");
                    return;
                }
            };
            route.open_tunnels.fetch_add(1, Ordering::Relaxed);
            splice(
                TokioIo::new(client),
                TokioIo::new(upstream),
                &route,
                &gateway,
            )
            .await;
            route.open_tunnels.fetch_sub(1, Ordering::Relaxed);
        });
    }

    let (mut parts, body) = response.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(&mut parts.headers, false);
    }
    if set_cookie {
        let cookie = format!(
            "{TOKEN_COOKIE}={}; Path=/{id}/; HttpOnly; SameSite=Lax",
            route.token
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            parts.headers.append(header::SET_COOKIE, value);
        }
    }
    let counted = gateway.clone();
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counted
                .bytes_from_notebook
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

/// Copies bytes both ways until either side closes or the route is removed, recording activity.
async fn splice<A, B>(client: A, upstream: B, route: &Route, gateway: &Gateway)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = Metered {
        io: client,
        route,
        counter: &gateway.bytes_to_notebook,
    };
    let mut upstream = Metered {
        io: upstream,
        route,
        counter: &gateway.bytes_from_notebook,
    };
    tokio::select! {
        () = route.tunnels.cancelled() => {}
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(cause) = result {
                tracing::debug!(%cause, "tunnel closed");
            }
        }
    }
}

/// One side of a tunnel: counts the bytes read from it and records them as activity.
struct Metered<'a, T> {
    io: T,
    route: &'a Route,
    counter: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf));
        let read = buf.filled().len() - before;
        if read > 0 {
            this.route.touch();
            this.counter.fetch_add(read as u64, Ordering::Relaxed);
        }
        Poll::Ready(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
