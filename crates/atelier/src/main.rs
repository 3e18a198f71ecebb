//! `atelier`: the server, and offline administration of the same data dir.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use atelier_domain::identity::random_secret;
use atelier_domain::{AccessKeyId, Credential, Project, ProjectId, User, UserId};
use atelier_server::identity::create_token;
use atelier_server::{App, AppParts, Config, ConfigOverrides};
use atelier_store::{SqliteStore, Store};

mod cli;

#[derive(Parser, Debug)]
#[command(
    name = "atelier",
    version,
    about = "A self-hosted ModelArts DevEnviron notebook service"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "ATELIER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database, credentials, volumes).
    #[arg(long, global = true, env = "ATELIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The CLI profile (in ~/.config/atelier/config.toml) the client commands use.
    #[arg(
        long,
        global = true,
        env = "ATELIER_PROFILE",
        default_value = "default"
    )]
    profile: String,
    /// Output of the client commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: cli::Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API server and the notebook gateway.
    Serve {
        /// API listen address (port 0 picks a free port).
        #[arg(long, env = "ATELIER_API_LISTEN")]
        api_listen: Option<std::net::SocketAddr>,
        /// Gateway listen address (port 0 picks a free port).
        #[arg(long, env = "ATELIER_GATEWAY_LISTEN")]
        gateway_listen: Option<std::net::SocketAddr>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        json_logs: bool,
    },
    /// Manage AK/SK credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Manage projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Issue `X-Auth-Token` tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the headers that sign one request with an AK/SK pair (for curl, wrk, scripts).
    /// The signature is valid for 15 minutes and only for exactly this request.
    Sign {
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Full URL, e.g. http://127.0.0.1:8080/v1/{project_id}/notebooks?limit=10
        url: String,
        /// Request body (signed byte for byte).
        #[arg(long, default_value = "")]
        body: String,
        /// Credentials file (default: DATA_DIR/admin-credentials.json).
        #[arg(long)]
        credentials: Option<PathBuf>,
    },
    /// Notebooks: create, list, show, start, stop, delete, open, wait, events.
    Notebook {
        #[command(subcommand)]
        command: cli::NotebookCommand,
    },
    /// A notebook's auto-stop lease.
    Lease {
        #[command(subcommand)]
        command: cli::LeaseCommand,
    },
    /// Flavors.
    Flavor {
        #[command(subcommand)]
        command: cli::FlavorCommand,
    },
    /// SSH key pairs.
    Keypair {
        #[command(subcommand)]
        command: cli::KeypairCommand,
    },
    /// Images: list them (API), or provision the built-in one on this machine.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum CredentialCommand {
    /// Create an AK/SK pair for a user (created if absent) with access to a project.
    Create {
        /// User name.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Project the user gets access to (default: the first project).
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List access keys (secrets are never shown again).
    List,
    /// Delete an access key.
    Delete { access_key: String },
}

#[derive(Subcommand, Debug)]
enum ProjectCommand {
    /// Create a project and give a user access to it.
    Create {
        name: String,
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// List projects.
    List,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token for a user in a project.
    Create {
        #[arg(long, default_value = "admin")]
        user: String,
        #[arg(long)]
        project: Option<String>,
        /// Lifetime, e.g. `24h`.
        #[arg(long, default_value = "24h")]
        lifetime: humantime::Duration,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// The images notebooks can use.
    List,
    /// Build the built-in JupyterLab image (Debian packages and PyPI, once per host) now, so
    /// that the first start does not wait (`image build` is the same).
    #[command(alias = "build")]
    Pull,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration (secrets redacted).
    Check,
}

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_client() {
        return client_main(cli);
    }
    let overrides = ConfigOverrides {
        data_dir: cli.data_dir.clone(),
        api_listen: match &cli.command {
            Command::Serve { api_listen, .. } => *api_listen,
            _ => None,
        },
        gateway_listen: match &cli.command {
            Command::Serve { gateway_listen, .. } => *gateway_listen,
            _ => None,
        },
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("atelier: invalid configuration: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("atelier: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("atelier: {error:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Commands that talk to a server through the API with a profile.
    fn is_client(&self) -> bool {
        matches!(
            self,
            Command::Notebook { .. }
                | Command::Lease { .. }
                | Command::Flavor { .. }
                | Command::Keypair { .. }
                | Command::Image {
                    command: ImageCommand::List
                }
        )
    }
}

/// Runs a client command; failures print `error: CODE: message` (or JSON) and exit 1.
fn client_main(cli: Cli) -> ExitCode {
    let output = cli.output;
    let report = |failure: cli::Failure| {
        if output == cli::Output::Json {
            println!("{}", failure.json());
        }
        eprintln!("error: {}", failure.text());
        ExitCode::FAILURE
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return report(cli::Failure::msg(format!(
                "cannot start the async runtime: {error}"
            )));
        }
    };
    let path = atelier_client::profile::default_path();
    let client = match atelier_client::profile::load(path.as_deref(), &cli.profile)
        .and_then(atelier_client::Client::new)
    {
        Ok(client) => client,
        Err(error) => return report(error.into()),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Notebook { command } => cli::notebook(&client, command, output).await,
            Command::Lease { command } => cli::lease(&client, command, output).await,
            Command::Flavor {
                command: cli::FlavorCommand::List,
            } => cli::flavors(&client, output).await,
            Command::Keypair { command } => cli::keypair(&client, command, output).await,
            _ => cli::images(&client, output).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { json_logs, .. } => serve(config, json_logs).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Credential { command } => credential(command, &config).await,
        Command::Image {
            command: ImageCommand::Pull,
        } => {
            let atelier_server::config::RuntimeConfig::Local(local) = &config.runtime else {
                anyhow::bail!(
                    "`atelier image pull` provisions the local runtime's image, but runtime.kind is {}",
                    config.runtime.kind()
                );
            };
            let runtime =
                atelier_server::runtimes::local_runtime(local, &config.registry, &config.data_dir)?;
            let builtin = atelier_runtime::ImageRef::Builtin("jupyterlab".to_owned());
            let pulled = atelier_runtime::Runtime::images(&*runtime)
                .pull(&builtin, &|line| tracing::info!("{line}"))
                .await?;
            println!(
                "JupyterLab image ready: {} ({}, {:.1} MiB compressed)",
                pulled.reference,
                pulled.digest.unwrap_or_default(),
                pulled.size.unwrap_or_default() as f64 / 1_048_576.0
            );
            Ok(())
        }
        Command::Project { command } => project(command, &config).await,
        Command::Token { command } => token(command, &config).await,
        Command::Notebook { .. }
        | Command::Lease { .. }
        | Command::Flavor { .. }
        | Command::Keypair { .. }
        | Command::Image {
            command: ImageCommand::List,
        } => unreachable!("client commands run in client_main"),
        Command::Sign {
            method,
            url,
            body,
            credentials,
        } => {
            let path = credentials.unwrap_or_else(|| {
                config
                    .data_dir
                    .join(atelier_server::identity::ADMIN_CREDENTIALS_FILE)
            });
            sign(&method, &url, &body, &path)
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATELIER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config, json_logs: bool) -> anyhow::Result<()> {
    init_logging(json_logs);
    let data_dir = config.data_dir.clone();
    let app = App::build(config, AppParts::default()).await?;
    // Listen for SIGTERM before announcing the addresses: whoever reads them may stop us at once.
    let signals = Signals::install()?;
    let mut stdout = std::io::stdout();
    if let Some(created) = &app.bootstrapped {
        writeln!(
            stdout,
            "first start: created the admin identity (shown once; also in {}):",
            data_dir
                .join(atelier_server::identity::ADMIN_CREDENTIALS_FILE)
                .display()
        )?;
        writeln!(stdout, "  project_id: {}", created.project_id)?;
        writeln!(stdout, "  access_key: {}", created.access_key)?;
        writeln!(stdout, "  secret_key: {}", created.secret_key)?;
        write_profile(created, &mut stdout)?;
    }
    // Before the two `listening` lines, which scripts wait for and may stop reading after.
    writeln!(
        stdout,
        "notebooks at {}",
        app.state().gateway.addressing().lab_url_template()
    )?;
    writeln!(stdout, "api listening on http://{}", app.api_addr())?;
    writeln!(stdout, "gateway listening on http://{}", app.gateway_addr())?;
    stdout.flush()?;
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            signals.wait().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    app.run(shutdown).await
}

/// The local admin's CLI profile, written on first start as `default` unless that profile
/// names another endpoint.
fn write_profile(
    created: &atelier_server::identity::AdminCredentials,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(path) = atelier_client::profile::default_path() else {
        return Ok(());
    };
    let profile = atelier_client::Profile {
        endpoint: created.endpoint.clone(),
        project_id: created.project_id.clone(),
        access_key: created.access_key.clone(),
        secret_key: created.secret_key.clone(),
    };
    use atelier_client::profile::Written;
    match atelier_client::profile::write_admin_profile(&path, "default", &profile) {
        Ok(Written::Added) => writeln!(
            out,
            "  CLI profile `default` written to {} (try `atelier notebook list`)",
            path.display()
        )?,
        Ok(Written::Replaced) => writeln!(
            out,
            "  CLI profile `default` in {} replaced: it named this endpoint with the keys of an \
             earlier data dir (try `atelier notebook list`)",
            path.display()
        )?,
        Ok(Written::Kept) => writeln!(
            out,
            "  {} already has a `default` profile for another endpoint; left as it is (set \
             ATELIER_ENDPOINT, ATELIER_PROJECT_ID, ATELIER_ACCESS_KEY and ATELIER_SECRET_KEY \
             from the credentials above to use this server)",
            path.display()
        )?,
        Err(error) => writeln!(out, "  no CLI profile written: {error}")?,
    }
    Ok(())
}

struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    Ok(Arc::new(
        SqliteStore::open(&config.data_dir.join("atelier.db")).await?,
    ))
}

fn now_ms() -> i64 {
    jiff_now()
}

fn jiff_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn find_or_create_user(store: &dyn Store, name: &str) -> anyhow::Result<User> {
    if let Some(user) = store.find_user_by_name(name).await? {
        return Ok(user);
    }
    let domain = store.find_user_by_name("admin").await?;
    let user = User {
        id: UserId::new_random(),
        name: name.to_owned(),
        domain_id: domain
            .as_ref()
            .map(|d| d.domain_id.clone())
            .unwrap_or_else(|| UserId::new_random().to_string()),
        domain_name: domain
            .map(|d| d.domain_name)
            .unwrap_or_else(|| "atelier".to_owned()),
        is_admin: false,
        create_at: now_ms(),
    };
    store.create_user(&user).await?;
    Ok(user)
}

async fn resolve_project(store: &dyn Store, project: Option<&str>) -> anyhow::Result<Project> {
    let projects = store.list_projects().await?;
    match project {
        None => projects
            .into_iter()
            .next()
            .context("no project exists yet: run `atelier serve` once or `atelier project create`"),
        Some(wanted) => projects
            .into_iter()
            .find(|p| p.id.as_str() == wanted || p.name == wanted)
            .with_context(|| format!("no project named or with id {wanted}")),
    }
}

async fn credential(command: CredentialCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        CredentialCommand::Create {
            user,
            project,
            description,
        } => {
            let project = resolve_project(store.as_ref(), project.as_deref()).await?;
            let user = find_or_create_user(store.as_ref(), &user).await?;
            store.add_project_member(&project.id, &user.id).await?;
            let credential = Credential {
                access_key: AccessKeyId::new_random(),
                secret_key: random_secret(40),
                user_id: user.id.clone(),
                description,
                create_at: now_ms(),
            };
            store.create_credential(&credential).await?;
            println!(
                "{}",
                serde_json::json!({
                    "user": user.name,
                    "project_id": project.id.to_string(),
                    "access_key": credential.access_key.to_string(),
                    "secret_key": credential.secret_key,
                })
            );
        }
        CredentialCommand::List => {
            for credential in store.list_credentials().await? {
                let user = store.find_user(&credential.user_id).await?;
                println!(
                    "{}\t{}\t{}",
                    credential.access_key,
                    user.map(|u| u.name).unwrap_or_default(),
                    credential.description
                );
            }
        }
        CredentialCommand::Delete { access_key } => {
            let access_key: AccessKeyId = access_key
                .parse()
                .map_err(|_| anyhow::anyhow!("not an access key"))?;
            if !store.delete_credential(&access_key).await? {
                anyhow::bail!("no such access key");
            }
            println!("deleted {access_key}");
        }
    }
    Ok(())
}

async fn project(command: ProjectCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        ProjectCommand::Create { name, user } => {
            let user = find_or_create_user(store.as_ref(), &user).await?;
            let project = Project {
                id: ProjectId::new_random(),
                name,
                create_at: now_ms(),
            };
            store
                .create_project(&project)
                .await
                .context("a project with that name exists")?;
            store.add_project_member(&project.id, &user.id).await?;
            println!("{}\t{}", project.id, project.name);
        }
        ProjectCommand::List => {
            for project in store.list_projects().await? {
                println!("{}\t{}", project.id, project.name);
            }
        }
    }
    Ok(())
}

async fn token(command: TokenCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let TokenCommand::Create {
        user,
        project,
        lifetime,
    } = command;
    let user = store
        .find_user_by_name(&user)
        .await?
        .with_context(|| format!("no user {user}"))?;
    let project = resolve_project(store.as_ref(), project.as_deref()).await?;
    store.add_project_member(&project.id, &user.id).await?;
    let token = create_token(
        store.as_ref(),
        &user.id,
        &project.id,
        lifetime.into(),
        now_ms(),
    )
    .await?;
    println!("{token}");
    Ok(())
}

fn sign(method: &str, url: &str, body: &str, credentials: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(credentials)
        .with_context(|| format!("cannot read {}", credentials.display()))?;
    let credentials: atelier_server::identity::AdminCredentials = serde_json::from_str(&text)?;
    let uri: http::Uri = url.parse().context("not a URL")?;
    let host = uri.authority().context("the URL needs a host")?.to_string();
    let date = atelier_auth::format_sdk_date(jiff::Timestamp::now());
    let mut headers = http::HeaderMap::new();
    headers.insert("host", host.parse()?);
    headers.insert("x-sdk-date", date.parse()?);
    headers.insert("content-type", "application/json".parse()?);
    let request = atelier_auth::SignableRequest {
        method,
        path: uri.path(),
        query: uri.query(),
        headers: &headers,
        body: body.as_bytes(),
    };
    let authorization = atelier_auth::sign(
        &request,
        &credentials.access_key,
        credentials.secret_key.as_bytes(),
        &["content-type", "host", "x-sdk-date"],
    )
    .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    println!("Content-Type: application/json");
    println!("X-Sdk-Date: {date}");
    println!("Authorization: {authorization}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
