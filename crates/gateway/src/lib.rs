//! The notebook gateway, on its own listener, proxied to each notebook's JupyterLab at the
//! [`atelier_domain::Upstream`] its runtime names: a Unix socket only the gateway reaches
//! (local runtime) or a TCP address (a pod).
//!
//! Every notebook is its own web origin: `{id}.{public host}` (see [`Addressing`]); the
//! gateway routes by `Host`, which it forwards unchanged with `X-Forwarded-Proto/-For`. The
//! path-based form (`/{id}/…` on one shared origin) exists only behind an explicit option.
//!
//! It checks the notebook's access token (`?token=`, `Authorization: token …` or the host-only
//! cookie it sets), refuses cookie-borne requests that another origin sent (`Origin`,
//! `Sec-Fetch-Site`), keeps the notebook's cookies on its own host, streams bodies both ways
//! without buffering, splices WebSocket upgrades, and records the last activity of every
//! notebook.
//!
//! **Architecture Invariant:** the gateway never buffers bodies or parses WebSocket frames.
#![forbid(unsafe_code)]

use std::collections::HashMap;
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

mod addressing;
mod busy_poll;
mod cookies;
pub use addressing::{Addressing, Routing};
pub use busy_poll::BusyPoll;
pub use cookies::TOKEN_COOKIE;

/// Where one notebook is reached, and with which token.
pub struct Route {
    /// Where the notebook's JupyterLab listens (a Unix socket or a TCP address).
    pub upstream: atelier_domain::Upstream,
    pub token: String,
    /// Where JupyterLab serves: `/`, or `/{id}/` when routing by path.
    base_path: String,
    /// Cancelled when the route goes away: closes the notebook's WebSocket tunnels.
    tunnels: CancellationToken,
    last_activity_ms: AtomicI64,
    open_tunnels: AtomicUsize,
    clock: Clock,
    /// Idle keep-alive connections to the notebook's socket, reused by the next requests.
    idle: std::sync::Mutex<Vec<Connection>>,
    busy_poll: Arc<BusyPoll>,
}

type Connection = hyper::client::conn::http1::SendRequest<Body>;

/// Idle connections kept per notebook.
const MAX_IDLE: usize = 64;

impl Route {
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("poisoned");
        while let Some(upstream) = idle.pop() {
            if upstream.is_ready() && !upstream.is_closed() {
                return Some(upstream);
            }
        }
        None
    }

    fn put_idle(&self, upstream: Connection) {
        let mut idle = self.idle.lock().expect("poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(upstream);
        }
    }

    /// A new connection to the notebook's JupyterLab.
    async fn connect(&self, id: &NotebookId, gateway: &Gateway) -> Result<Connection, Response> {
        let sender = dial(&self.upstream).await.map_err(|cause| {
            tracing::warn!(notebook_id = %id, upstream = %self.upstream, %cause, "notebook unreachable");
            error(StatusCode::BAD_GATEWAY, "The notebook is not answering.")
        })?;
        gateway.upstream_connects.fetch_add(1, Ordering::Relaxed);
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
    addressing: Addressing,
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
    pub fn new(addressing: Addressing) -> Arc<Gateway> {
        Gateway::with_clock(system_clock(), addressing)
    }

    pub fn with_clock(clock: Clock, addressing: Addressing) -> Arc<Gateway> {
        Gateway::with_busy_poll(clock, BusyPoll::off(), addressing)
    }

    /// A gateway whose event loop, when [`Gateway::serve`]d, busy-polls after HTTP traffic.
    pub fn with_busy_poll(
        clock: Clock,
        busy_poll: Arc<BusyPoll>,
        addressing: Addressing,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            addressing,
            busy_poll,
            routes: RwLock::new(HashMap::new()),
            clock,
            requests: AtomicU64::new(0),
            bytes_to_notebook: AtomicU64::new(0),
            bytes_from_notebook: AtomicU64::new(0),
            upstream_connects: AtomicU64::new(0),
        })
    }

    /// How notebooks are addressed: their origins, base paths and URLs.
    pub fn addressing(&self) -> &Addressing {
        &self.addressing
    }

    /// Points the notebook's address at `upstream`, accepting `token`. Replaces (and
    /// disconnects) an older route.
    pub fn set_route(&self, id: NotebookId, upstream: atelier_domain::Upstream, token: String) {
        let route = Arc::new(Route {
            upstream,
            token,
            base_path: self.addressing.base_path(&id),
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
        let kernels = get_json(&route, "api/kernels").await;
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
        let terminals = get_json(&route, "api/terminals").await;
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

    /// Serves `listener` until `shutdown` is cancelled; the receiver yields how serving ended.
    ///
    /// By default on the caller's (multi-threaded) runtime, like the API. With busy polling
    /// enabled, on a thread of its own ("atelier-gateway") with a single-threaded runtime, the
    /// one runtime [`BusyPoll`] can poll: all notebook traffic then shares that one thread.
    pub fn serve(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
        listener.set_nonblocking(true)?;
        let (done, ended) = tokio::sync::oneshot::channel();
        if !self.busy_poll.enabled() {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(async move {
                let _ = done.send(self.serve_on(listener, shutdown).await);
            });
            return Ok(ended);
        }
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
                            let served = self.serve_on(listener, shutdown).await;
                            poller.abort();
                            served
                        })
                    });
                let _ = done.send(served);
            })?;
        Ok(ended)
    }

    async fn serve_on(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt as _;
        let app = self
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener.tap_io(no_delay), app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// Turns Nagle's algorithm off on an accepted connection. Small request/response exchanges
/// (kernel messages above all) would otherwise wait for delayed ACKs: ~40 ms per round trip.
pub fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// Opens an HTTP/1 connection (with upgrades, for WebSockets) to a notebook's JupyterLab.
async fn dial(upstream: &atelier_domain::Upstream) -> std::io::Result<Connection> {
    match upstream {
        atelier_domain::Upstream::Unix(path) => handshake(UnixStream::connect(path).await?).await,
        atelier_domain::Upstream::Tcp(address) => {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            no_delay(&mut stream);
            handshake(stream).await
        }
    }
}

async fn handshake<S>(stream: S) -> std::io::Result<Connection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(cause) = connection.with_upgrades().await {
            tracing::debug!(%cause, "notebook connection ended");
        }
    });
    Ok(sender)
}

/// GET a JSON document (`path` under the notebook's base path) from JupyterLab over its
/// socket, with the notebook's token; `None` on any failure.
async fn get_json(route: &Route, path: &str) -> Option<serde_json::Value> {
    use http_body_util::BodyExt;
    let mut sender = dial(&route.upstream).await.ok()?;
    let request = axum::http::Request::get(format!("{}{path}", route.base_path))
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("token {}", route.token))
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

/// How the request proved it may reach the notebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// `?token=`: a link someone was given; the answer sets the cookie.
    Query,
    /// `Authorization: token …`: an API client.
    Header,
    /// The token cookie: a browser, which may have been sent by another site's page.
    Cookie,
}

/// Why a request may not reach the notebook.
enum Refused {
    /// No token at all: 401.
    Missing,
    /// A token, not this notebook's: 403.
    Wrong,
}

impl Refused {
    fn response(self) -> Response {
        match self {
            Refused::Missing => error(StatusCode::UNAUTHORIZED, "A token is required."),
            Refused::Wrong => error(
                StatusCode::FORBIDDEN,
                "The token is not valid for this notebook.",
            ),
        }
    }
}

/// Checks the token the request presents, in this order: `?token=`, `Authorization: token`,
/// the token cookies.
fn authenticate(route: &Route, uri: &Uri, headers: &HeaderMap) -> Result<Auth, Refused> {
    let valid =
        |token: &str| atelier_auth::constant_time_eq(token.as_bytes(), route.token.as_bytes());
    let wrong = || Refused::Wrong;
    if let Some(query) = uri.query()
        && let Some((_, value)) =
            form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token")
    {
        return if valid(&value) {
            Ok(Auth::Query)
        } else {
            Err(wrong())
        };
    }
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = value.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("token")
        {
            return if valid(token.trim()) {
                Ok(Auth::Header)
            } else {
                Err(wrong())
            };
        }
    }
    let mut presented = false;
    for token in cookies::token_cookies(headers) {
        if valid(token) {
            return Ok(Auth::Cookie);
        }
        presented = true;
    }
    Err(if presented {
        Refused::Wrong
    } else {
        Refused::Missing
    })
}

/// Whether a browser sent this request on behalf of a page of another origin (a sibling
/// notebook's above all: same *site*, so `SameSite` cookies go along). Such a request may only
/// be a plain top-level navigation; everything else — reads, writes, frames, WebSockets — is
/// refused. `Origin` must be the notebook's own (`scheme://Host`), and `Sec-Fetch-Site`,
/// when present, `same-origin` or `none`.
fn cross_origin(request: &Request, scheme: &str, host: &str) -> bool {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = format!("{scheme}://{host}");
        if !origin.as_bytes().eq_ignore_ascii_case(own.as_bytes()) {
            return true;
        }
    }
    let fetch = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
    match fetch("sec-fetch-site") {
        None | Some(b"same-origin" | b"none") => false,
        Some(_) => {
            let navigation = fetch("sec-fetch-mode") == Some(b"navigate")
                && fetch("sec-fetch-dest") == Some(b"document")
                && matches!(
                    *request.method(),
                    axum::http::Method::GET | axum::http::Method::HEAD
                );
            !navigation
        }
    }
}

/// The 308 from a path-form URL on the bare host to the notebook's own origin.
fn moved(addressing: &Addressing, id: &NotebookId, host: &str, uri: &Uri) -> Response {
    let rest = uri
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(&id.to_string()))
        .unwrap_or("");
    let rest = if rest.is_empty() { "/" } else { rest };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = format!(
        "{}://{id}.{}{rest}{query}",
        addressing.scheme(),
        host.to_ascii_lowercase()
    );
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => error(StatusCode::NOT_FOUND, "No notebook at this address."),
    }
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
    // HTTP/1 names the host in `Host`, HTTP/2 in `:authority`.
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
    };
    let id = match gateway
        .addressing
        .target(host.as_deref(), request.uri().path())
    {
        addressing::Target::Notebook(id) => id,
        addressing::Target::Moved(id) => {
            return moved(
                &gateway.addressing,
                &id,
                host.as_deref().unwrap_or_default(),
                request.uri(),
            );
        }
        addressing::Target::Nowhere => {
            return error(StatusCode::NOT_FOUND, "No notebook at this address.");
        }
    };
    // `target` found a notebook, so there is a host.
    let host = host.unwrap_or_default();
    let Some(route) = gateway.route(&id) else {
        return error(StatusCode::NOT_FOUND, "The notebook is not running.");
    };
    let auth = match authenticate(&route, request.uri(), request.headers()) {
        Ok(auth) => auth,
        Err(refused) => return refused.response(),
    };
    // A page elsewhere cannot know the token, but its browser sends the cookie along.
    if auth == Auth::Cookie && cross_origin(&request, gateway.addressing.scheme(), &host) {
        tracing::info!(notebook_id = %id, "refused a cross-origin request");
        return error(
            StatusCode::FORBIDDEN,
            "Cross-origin requests to a notebook are refused.",
        );
    }
    let set_cookie = auth == Auth::Query;
    route.touch();
    // The answer is expected within the busy-poll window: no sleep before it arrives...
    route.busy_poll.activity();
    gateway.requests.fetch_add(1, Ordering::Relaxed);

    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    strip_hop_by_hop(request.headers_mut(), upgrade);
    forward_headers(&mut request, &host, gateway.addressing.scheme());

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
    confine_cookies(&mut parts.headers, gateway.addressing.secure());
    if set_cookie {
        let cookie = cookies::token_cookie(&gateway.addressing, &id, &route.token);
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

/// What JupyterLab learns of the request's way here: the `Host` the browser used (its origin
/// check compares `Origin` with it), the public scheme and the client's address. Headers a
/// client could spoof those with are dropped.
fn forward_headers(request: &mut Request, host: &str, scheme: &'static str) {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    // An origin-form target: `/path?query`, whatever form the client used.
    if request.uri().authority().is_some() {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if let Ok(uri) = target.parse() {
            *request.uri_mut() = uri;
        }
    }
    let headers = request.headers_mut();
    for spoofable in [
        "x-real-ip",
        "x-scheme",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
    ] {
        headers.remove(spoofable);
    }
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, host);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    // Appended: the last entry is the one the gateway saw, which is what Tornado reads.
    if let Some(peer) = peer {
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {peer}"),
            None => peer,
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
    }
}

/// Rewrites the notebook's `Set-Cookie` headers with [`cookies::confine`].
fn confine_cookies(headers: &mut HeaderMap, secure: bool) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let confined: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| HeaderValue::from_str(&cookies::confine(v, secure)).ok())
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in confined {
        headers.append(header::SET_COOKIE, value);
    }
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
