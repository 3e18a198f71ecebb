//! Prometheus metrics, served as text at `/metrics` on the API listener. One explicit
//! registry per app (no global state): start duration per step and outcome, API request
//! durations, notebooks by status, SSH sessions, gateway requests and bytes, lease expiries.
use std::sync::Arc;
use tokio::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use atelier_gateway::Gateway;
use atelier_runtime::Runtime;

use atelier_control::activity::Activity;
use atelier_control::metrics::ControlMetrics;
use atelier_control::service::NotebookService;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

/// Route templates and methods as `&'static str`: a label set costs no allocation per request.
/// They are bounded by the route table (plus `unmatched`), so leaking them is fine.
fn intern(text: &str) -> &'static str {
    static SEEN: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());
    if let Some(found) = SEEN.read().expect("poisoned").iter().find(|s| **s == text) {
        return found;
    }
    let mut seen = SEEN.write().expect("poisoned");
    if let Some(found) = seen.iter().find(|s| **s == text) {
        return found;
    }
    if seen.len() >= 256 {
        return "other";
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    seen.push(leaked);
    leaked
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

fn api_histogram() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

pub struct Metrics {
    registry: Registry,
    pub api_requests: Family<ApiLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// The registry: the control plane's counters, API request durations, and the metrics read
    /// at scrape time from the service, the gateway and the SSH sessions.
    pub fn new(
        control: &ControlMetrics,
        service: Arc<NotebookService>,
        gateway: Arc<Gateway>,
        activity: Arc<Activity>,
        runtime: Arc<dyn Runtime>,
    ) -> Arc<Metrics> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StateCollector {
            service,
            gateway,
            activity,
            runtime,
        }));
        let api_requests =
            Family::<ApiLabels, Histogram, fn() -> Histogram>::new_with_constructor(api_histogram);
        registry.register(
            "atelier_start_step_duration_seconds",
            "Duration of each start step (storage, compute, network, init) by outcome",
            control.start_steps.clone(),
        );
        registry.register(
            "atelier_start_duration_seconds",
            "Duration of whole starts (first step to RUNNING or failure) by outcome",
            control.starts.clone(),
        );
        registry.register(
            "atelier_api_request_duration_seconds",
            "API request durations (to the response head) by method, route and status",
            api_requests.clone(),
        );
        registry.register(
            "atelier_lease_expiries",
            "Notebooks stopped by the lease keeper, by reason (lease_expired, idle)",
            control.lease_expiries.clone(),
        );
        Arc::new(Metrics {
            registry,
            api_requests,
        })
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

struct StateCollector {
    service: Arc<NotebookService>,
    gateway: Arc<Gateway>,
    activity: Arc<Activity>,
    runtime: Arc<dyn Runtime>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

/// Encodes one metric without labels.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut by_status: std::collections::BTreeMap<&'static str, i64> = Default::default();
        for notebook in self.service.all() {
            *by_status.entry(notebook.status.as_str()).or_default() += 1;
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "atelier_notebooks",
            "Notebooks by status",
            None,
            gauge.metric_type(),
        )?;
        for (status, count) in by_status {
            ConstGauge::new(count).encode(family.encode_family(&StatusLabels {
                status: status.to_owned(),
            })?)?;
        }
        encode_one(
            &mut encoder,
            "atelier_ssh_sessions",
            "Open SSH sessions",
            ConstGauge::new(self.activity.ssh_sessions_total() as i64),
        )?;
        encode_one(
            &mut encoder,
            "atelier_warm_pool_sandboxes",
            "Idle warm sandboxes ready to serve a start",
            ConstGauge::new(self.runtime.stats().warm as i64),
        )?;
        let stats = self.gateway.stats();
        encode_one(
            &mut encoder,
            "atelier_gateway_requests",
            "Requests proxied to notebooks (WebSocket upgrades included)",
            ConstCounter::new(stats.requests),
        )?;
        encode_one(
            &mut encoder,
            "atelier_gateway_upstream_connections",
            "Connections opened to notebook sockets; other requests reused a pooled one",
            ConstCounter::new(stats.upstream_connects),
        )?;
        encode_one(
            &mut encoder,
            "atelier_gateway_busy_poll_seconds",
            "Time the gateway's event loop spent in busy-poll windows instead of sleeping (wall clock; an upper bound on the CPU it used)",
            ConstCounter::new(stats.busy_poll.as_secs_f64()),
        )?;
        let bytes = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "atelier_gateway_bytes",
            "Bytes proxied, by direction (to_notebook, from_notebook)",
            None,
            bytes.metric_type(),
        )?;
        for (direction, value) in [
            ("to_notebook", stats.bytes_to_notebook),
            ("from_notebook", stats.bytes_from_notebook),
        ] {
            ConstCounter::new(value).encode(family.encode_family(&DirectionLabels {
                direction: direction.to_owned(),
            })?)?;
        }
        encode_one(
            &mut encoder,
            "atelier_gateway_open_websockets",
            "Open WebSocket tunnels to notebooks",
            ConstGauge::new(stats.open_tunnels as i64),
        )?;
        Ok(())
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        metrics.encode(),
    )
        .into_response()
}

/// Middleware: times every API request by its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = intern(request.method().as_str());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| intern(p.as_str()));
    let response = next.run(request).await;
    metrics
        .api_requests
        .get_or_create(&ApiLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
