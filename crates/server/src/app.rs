//! Building and running the server: `App::build` binds the listeners and loads the state;
//! `App::run` serves until the shutdown token fires.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use atelier_control::activity::Activity;
use atelier_control::clock::{Clock, SystemClock};
use atelier_control::gateway::NotebookGateway;
use atelier_control::lease_keeper::LeaseKeeper;
use atelier_control::metrics::ControlMetrics;
use atelier_control::operations::NotebookOperations;
use atelier_control::orchestrator::Orchestrator;
use atelier_control::service::NotebookService;
use atelier_control::ssh::{SshService, SshSettings};
use atelier_domain::NotebookId;
use atelier_gateway::{BusyPoll, Gateway};
use atelier_runtime::Runtime;
use atelier_store::{SqliteStore, Store};

use crate::config::Config;
use crate::identity::{self, AdminCredentials, Identity};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Everything needed to build an [`App`] besides the configuration.
pub struct AppParts {
    pub store: Option<Arc<dyn Store>>,
    pub runtime: Option<Arc<dyn Runtime>>,
    pub clock: Arc<dyn Clock>,
}

impl Default for AppParts {
    fn default() -> Self {
        AppParts {
            store: None,
            runtime: None,
            clock: Arc::new(SystemClock),
        }
    }
}

pub struct App {
    api_listener: TcpListener,
    gateway_listener: TcpListener,
    state: AppState,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Set when this start created the admin identity.
    pub bootstrapped: Option<AdminCredentials>,
}

impl App {
    /// Binds the listeners, opens the store, loads every notebook and bootstraps the identity
    /// on first start. Serves nothing until [`App::run`].
    pub async fn build(config: Config, parts: AppParts) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir)?;
        let store: Arc<dyn Store> = match parts.store {
            Some(store) => store,
            None => Arc::new(SqliteStore::open(&config.data_dir.join("atelier.db")).await?),
        };
        let api_listener = TcpListener::bind(config.api_listen).await?;
        let gateway_listener = TcpListener::bind(config.gateway_listen).await?;
        let api_addr = api_listener.local_addr()?;
        let gateway_addr = gateway_listener.local_addr()?;
        let clock = parts.clock;

        let bootstrapped = identity::bootstrap(
            store.as_ref(),
            &config.data_dir,
            &format!("http://{api_addr}"),
            &config.bootstrap,
            clock.now_ms(),
        )
        .await?;
        let domain = match store.find_user_by_name("admin").await? {
            Some(admin) => (admin.domain_id, admin.domain_name),
            None => (String::new(), "atelier".to_owned()),
        };

        let flavors = config.flavor_catalogue()?;
        let service = Arc::new(NotebookService::load(store.clone(), clock.clone(), flavors).await?);
        let runtime: Arc<dyn Runtime> = match parts.runtime {
            Some(runtime) => runtime,
            None => crate::runtimes::build(&config.runtime, &config.registry, &config.data_dir)?,
        };
        let gateway = {
            let clock = clock.clone();
            let busy_poll = BusyPoll::new(Duration::from_micros(config.gateway_busy_poll_us));
            let addressing = config.gateway_addressing(gateway_addr.port())?;
            if config.gateway_public_url.is_none() && !gateway_addr.ip().is_loopback() {
                tracing::warn!(
                    "the gateway listens on {gateway_addr} but notebooks' URLs name {}: set \
                     gateway_public_url to a name with a wildcard DNS record for other machines",
                    addressing.gateway_origin()
                );
            }
            Gateway::with_busy_poll(Arc::new(move || clock.now_ms()), busy_poll, addressing)
        };
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let activity = Arc::new(Activity::default());
        let control_metrics = ControlMetrics::default();
        let metrics = Metrics::new(
            &control_metrics,
            service.clone(),
            gateway.clone(),
            activity.clone(),
            runtime.clone(),
        );
        let routes: Arc<dyn NotebookGateway> = Arc::new(GatewayRoutes(gateway.clone()));
        let lease_keeper = LeaseKeeper::new(
            clock.clone(),
            Some(routes.clone()),
            activity.clone(),
            control_metrics.clone(),
        );
        let ssh = SshService::new(
            ssh_settings(&config, gateway.addressing())?,
            service.clone(),
            runtime.clone(),
            activity,
            shutdown.clone(),
        );
        let orchestrator = Orchestrator::new(
            service.clone(),
            runtime,
            routes,
            ssh.clone(),
            control_metrics,
            config.storage.grants(),
            tracker.clone(),
            shutdown.clone(),
        );
        for notebook in service.all() {
            lease_keeper.observe(&notebook);
        }
        {
            let lease_keeper = lease_keeper.clone();
            service.observe(Box::new(move |notebook| lease_keeper.observe(notebook)));
        }
        let operations = NotebookOperations::new(
            service.clone(),
            orchestrator.clone(),
            ssh.clone(),
            config.registry.push.clone(),
        );
        let state = AppState {
            operations,
            service,
            orchestrator,
            identity: Arc::new(Identity::new(store, config.auth.clone(), clock)),
            lease_keeper,
            gateway,
            domain: Arc::new(domain),
            region: Arc::from(config.auth.region.as_str()),
            ssh,
            shutdown: shutdown.clone(),
            metrics,
            max_image_bytes: config.registry.max_image_mb.saturating_mul(1 << 20),
        };
        Ok(App {
            api_listener,
            gateway_listener,
            state,
            tracker,
            shutdown,
            bootstrapped,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listener.local_addr().expect("bound listener")
    }

    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_listener.local_addr().expect("bound listener")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains requests and background tasks.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App {
            api_listener,
            gateway_listener,
            state,
            tracker,
            shutdown: internal,
            ..
        } = self;
        state.orchestrator.reconcile().await;
        tracker.spawn(state.lease_keeper.clone().run(
            state.service.clone(),
            state.orchestrator.clone(),
            internal.clone(),
        ));
        let api = crate::routes::router(state.clone());
        // Either the caller's token or our own stops both listeners.
        let stop = internal.child_token();
        {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stop.cancel();
            });
        }
        let api_server = axum::serve(api_listener.tap_io(atelier_gateway::no_delay), api)
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        // The gateway runs on a thread of its own (see `Gateway::serve`).
        let gateway_server = state
            .gateway
            .clone()
            .serve(gateway_listener.into_std()?, stop.clone())?;
        let (api_result, gateway_result) = tokio::join!(async { api_server.await }, async {
            gateway_server
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the gateway thread died")))
        });
        internal.cancel();
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not finish within 10 s");
        }
        // Idle warm sandboxes serve nobody once the server is gone.
        state.orchestrator.runtime().shutdown().await;
        api_result?;
        gateway_result?;
        Ok(())
    }
}

/// The control plane's view of the gateway (`atelier_control` knows no HTTP crate).
struct GatewayRoutes(Arc<Gateway>);

impl NotebookGateway for GatewayRoutes {
    fn set_route(&self, id: NotebookId, upstream: atelier_domain::Upstream, token: String) {
        self.0.set_route(id, upstream, token);
    }

    fn remove_route(&self, id: &NotebookId) {
        self.0.remove_route(id);
    }

    fn base_path(&self, id: &NotebookId) -> String {
        self.0.addressing().base_path(id)
    }

    fn origin(&self, id: &NotebookId) -> String {
        self.0.addressing().origin(id)
    }

    fn last_activity(&self, id: &NotebookId) -> Option<i64> {
        self.0.activity(id).map(|(last, _)| last)
    }

    fn jupyter_busy<'a>(
        &'a self,
        id: &'a NotebookId,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.0.jupyter_busy(id))
    }
}

/// Where SSH endpoints listen and the host their `uri` names.
fn ssh_settings(
    config: &Config,
    addressing: &atelier_gateway::Addressing,
) -> anyhow::Result<SshSettings> {
    let (first_port, last_port) = config.ssh.port_range()?;
    let listen_address = config.ssh.listen_address;
    let public_host = match &config.ssh.public_host {
        Some(host) => host.clone(),
        None if config.gateway_public_url.is_some() => {
            addressing.host().trim_matches(['[', ']']).to_owned()
        }
        None if listen_address.is_unspecified() => "127.0.0.1".to_owned(),
        None => listen_address.to_string(),
    };
    Ok(SshSettings {
        listen_address,
        public_host,
        first_port,
        last_port,
    })
}
