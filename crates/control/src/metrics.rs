//! The counters the control plane keeps: start steps and whole starts by outcome, lease
//! expiries by reason. The server registers them and serves them as Prometheus text.
use tokio::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

/// Cheap to clone: each family is shared with its clones (and with the registry that serves it).
#[derive(Clone)]
pub struct ControlMetrics {
    pub start_steps: Family<StepLabels, Histogram>,
    pub starts: Family<OutcomeLabels, Histogram>,
    pub lease_expiries: Family<ReasonLabels, Counter>,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        ControlMetrics {
            start_steps: Family::<StepLabels, Histogram>::new_with_constructor(seconds_histogram),
            starts: Family::<OutcomeLabels, Histogram>::new_with_constructor(seconds_histogram),
            lease_expiries: Family::<ReasonLabels, Counter>::default(),
        }
    }
}

impl ControlMetrics {
    pub fn step(&self, step: &str, completed: bool, started: Instant) {
        self.start_steps
            .get_or_create(&StepLabels {
                step: step.to_owned(),
                outcome: outcome(completed),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn start(&self, completed: bool, started: Instant) {
        self.starts
            .get_or_create(&OutcomeLabels {
                outcome: outcome(completed),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn lease_expiry(&self, reason: &str) {
        self.lease_expiries
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

fn outcome(completed: bool) -> String {
    if completed { "completed" } else { "failed" }.to_owned()
}
