//! `atelier-loadgen`: the benchmark suite's load client. It measures the same target through
//! the gateway (TCP) and directly (the notebook's Unix socket), with keep-alive HTTP/1.1
//! connections or a Jupyter kernel WebSocket, and prints one JSON line of results.
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Cli {
    /// Connect to this TCP address (HOST:PORT)…
    #[arg(long, global = true)]
    tcp: Option<String>,
    /// …or to this Unix socket.
    #[arg(long, global = true)]
    unix: Option<std::path::PathBuf>,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", global = true)]
    headers: Vec<String>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Serve a fixed small JSON answer on the `--unix` socket: an upstream with no cost of its
    /// own, to measure a proxy in front of it.
    Echo,
    /// GET `path` on `concurrency` keep-alive connections for `seconds`.
    Http {
        #[arg(long)]
        path: String,
        #[arg(long, short = 'c', default_value_t = 1)]
        concurrency: usize,
        #[arg(long, short = 'd', default_value_t = 5.0)]
        seconds: f64,
    },
    /// Jupyter kernel messages over `path` (…/api/kernels/{id}/channels): `kernel_info`
    /// requests with `window` in flight, or `execute` of `code` one at a time.
    Kernel {
        #[arg(long)]
        path: String,
        #[arg(long, default_value = "kernel_info")]
        message: String,
        #[arg(long, default_value = "1+1")]
        code: String,
        #[arg(long, default_value_t = 1)]
        window: usize,
        #[arg(long, short = 'd', default_value_t = 5.0)]
        seconds: f64,
        /// The kernel WebSocket protocol.
        #[arg(long, value_enum, default_value_t = Protocol::V1)]
        protocol: Protocol,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    /// `v1.kernel.websocket.jupyter.org`: binary frames, what JupyterLab 4 speaks.
    V1,
    /// The legacy JSON text frames, re-encoded by the server.
    Json,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

async fn connect(cli: &Cli) -> anyhow::Result<Box<dyn Stream>> {
    match (&cli.tcp, &cli.unix) {
        (Some(address), None) => {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        (None, Some(path)) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        _ => Err(anyhow!("give exactly one of --tcp and --unix")),
    }
}

fn header_pairs(cli: &Cli) -> anyhow::Result<Vec<(String, String)>> {
    cli.headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow!("bad header {h}"))
        })
        .collect()
}

/// The `Host` to send: a `--header "Host: …"` (a notebook's own host on the gateway), else
/// the address dialled.
fn host(cli: &Cli) -> String {
    header_pairs(cli)
        .ok()
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        })
        .map(|(_, value)| value)
        .or_else(|| cli.tcp.clone())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Percentiles in ms of latencies in µs.
fn summary(mut latencies: Vec<u64>, elapsed: Duration) -> Value {
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[index] as f64 / 1000.0
    };
    json!({
        "count": latencies.len(),
        "per_second": latencies.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
    })
}

async fn http_worker(cli: &Cli, path: &str, until: Instant) -> anyhow::Result<Vec<u64>> {
    let stream = connect(cli).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
            .await?;
    tokio::spawn(connection);
    let headers: Vec<_> = header_pairs(cli)?
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .collect();
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let mut request = http::Request::get(path).header("host", host(cli));
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let request = request.body(Empty::new())?;
        let started = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if !status.is_success() {
            return Err(anyhow!("HTTP {status} for {path}"));
        }
        latencies.push(started.elapsed().as_micros() as u64);
    }
    Ok(latencies)
}

async fn http(cli: &Cli, path: &str, concurrency: usize, seconds: f64) -> anyhow::Result<Value> {
    // Warm up the connection path once.
    http_worker(cli, path, Instant::now() + Duration::from_millis(200)).await?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let workers = (0..concurrency).map(|_| http_worker(cli, path, until));
    let results = futures_util::future::join_all(workers).await;
    let elapsed = started.elapsed();
    let mut all = Vec::new();
    for result in results {
        all.extend(result?);
    }
    Ok(summary(all, elapsed))
}

/// A kernel message in the `v1.kernel.websocket.jupyter.org` framing: the count of offsets,
/// the offsets (u64 little-endian), the channel, then header, parent header, metadata, content.
fn v1_frame(channel: &str, message: &Value) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = ["header", "parent_header", "metadata", "content"]
        .iter()
        .map(|k| message[k].to_string().into_bytes())
        .collect();
    let mut offsets = vec![8 * (1 + 1 + parts.len() as u64 + 1)];
    offsets.push(offsets[0] + channel.len() as u64);
    for part in &parts {
        offsets.push(offsets.last().copied().unwrap_or(0) + part.len() as u64);
    }
    let mut frame = (offsets.len() as u64).to_le_bytes().to_vec();
    for offset in &offsets {
        frame.extend_from_slice(&offset.to_le_bytes());
    }
    frame.extend_from_slice(channel.as_bytes());
    for part in parts {
        frame.extend_from_slice(&part);
    }
    frame
}

/// The `msg_type` and parent `msg_id` of a v1 frame.
fn v1_reply(frame: &[u8]) -> anyhow::Result<(String, Option<String>)> {
    let word = |i: usize| -> anyhow::Result<usize> {
        let bytes = frame
            .get(8 * i..8 * i + 8)
            .ok_or_else(|| anyhow!("short v1 frame"))?;
        Ok(u64::from_le_bytes(bytes.try_into()?) as usize)
    };
    let count = word(0)?;
    let offsets: Vec<usize> = (1..=count).map(word).collect::<anyhow::Result<_>>()?;
    let part = |i: usize| -> anyhow::Result<Value> {
        let bytes = match (offsets.get(i), offsets.get(i + 1)) {
            (Some(&start), Some(&end)) => frame.get(start..end),
            _ => None,
        };
        Ok(serde_json::from_slice(
            bytes.ok_or_else(|| anyhow!("bad v1 offsets"))?,
        )?)
    };
    let header = part(1)?;
    let parent = part(2)?;
    Ok((
        header["msg_type"].as_str().unwrap_or("").to_owned(),
        parent["msg_id"].as_str().map(str::to_owned),
    ))
}

fn kernel_message(msg_type: &str, code: &str) -> (String, Value) {
    let msg_id = uuid::Uuid::new_v4().to_string();
    let content = if msg_type == "execute_request" {
        json!({"code": code, "silent": false, "store_history": false, "user_expressions": {},
               "allow_stdin": false, "stop_on_error": true})
    } else {
        json!({})
    };
    let message = json!({
        "header": {"msg_id": msg_id, "username": "bench", "session": "bench-session",
                   "msg_type": msg_type, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [], "content": content,
    });
    (msg_id, message)
}

async fn kernel(
    cli: &Cli,
    path: &str,
    message: &str,
    code: &str,
    window: usize,
    seconds: f64,
    protocol: Protocol,
) -> anyhow::Result<Value> {
    let v1 = protocol == Protocol::V1;
    let stream = connect(cli).await?;
    let url = format!("ws://{}{path}", host(cli));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    if v1 {
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("v1.kernel.websocket.jupyter.org"),
        );
    }
    for (name, value) in header_pairs(cli)? {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes())?,
            http::HeaderValue::from_str(&value)?,
        );
    }
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .context("WebSocket handshake")?;
    let (msg_type, reply_type, window) = match message {
        "execute" => ("execute_request", "execute_reply", 1),
        _ => ("kernel_info_request", "kernel_info_reply", window.max(1)),
    };
    let mut in_flight: std::collections::HashMap<String, Instant> = Default::default();
    let mut latencies = Vec::new();
    let warmup_until = Instant::now() + Duration::from_millis(500);
    let mut started = Instant::now();
    let mut until = warmup_until + Duration::from_secs_f64(seconds);
    let mut warm = false;
    loop {
        let now = Instant::now();
        if !warm && now >= warmup_until {
            warm = true;
            latencies.clear();
            started = now;
            until = now + Duration::from_secs_f64(seconds);
        }
        if now < until {
            while in_flight.len() < window {
                let (id, message) = kernel_message(msg_type, code);
                in_flight.insert(id, Instant::now());
                let frame = if v1 {
                    Message::binary(v1_frame("shell", &message))
                } else {
                    Message::text(message.to_string())
                };
                socket.send(frame).await?;
            }
        } else if in_flight.is_empty() {
            break;
        }
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no kernel reply within 30 s")?;
        let Some(next) = next else {
            return Err(anyhow!("the kernel WebSocket closed"));
        };
        let (kind, parent) = match next? {
            Message::Binary(frame) if v1 => v1_reply(&frame)?,
            Message::Text(text) if !v1 => {
                let reply: Value = serde_json::from_str(&text)?;
                (
                    reply["msg_type"].as_str().unwrap_or("").to_owned(),
                    reply["parent_header"]["msg_id"].as_str().map(str::to_owned),
                )
            }
            _ => continue,
        };
        if kind != reply_type {
            continue;
        }
        if let Some(parent) = parent
            && let Some(sent) = in_flight.remove(&parent)
            && Instant::now() < until
        {
            latencies.push(sent.elapsed().as_micros() as u64);
        }
    }
    let elapsed = until.min(Instant::now()) - started;
    let _ = socket.close(None).await;
    Ok(summary(latencies, elapsed))
}

async fn echo(cli: &Cli) -> anyhow::Result<()> {
    let path = cli.unix.as_ref().context("echo needs --unix")?;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(
                        b"{\"started\": \"2026-01-01T00:00:00Z\", \"kernels\": 0}",
                    ),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Mode::Echo => return echo(&cli).await,
        Mode::Http {
            path,
            concurrency,
            seconds,
        } => http(&cli, path, *concurrency, *seconds).await?,
        Mode::Kernel {
            path,
            message,
            code,
            window,
            seconds,
            protocol,
        } => kernel(&cli, path, message, code, *window, *seconds, *protocol).await?,
    };
    println!("{result}");
    Ok(())
}
