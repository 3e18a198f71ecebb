//! The client commands: `atelier notebook|lease|flavor|keypair|image list …` through the API
//! with a profile's AK/SK (see `atelier_client::profile`). Tables by default, `--output json`
//! for scripts; errors print the ModelArts `error_code` and message.
use std::io::IsTerminal;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use atelier_client::{Client, ClientError, ProgressItem};
use atelier_wire::NotebookResp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum NotebookCommand {
    /// Create a notebook (it starts at once, like ModelArts).
    Create {
        name: String,
        /// Flavor id (`atelier flavor list`).
        #[arg(long, default_value = "modelarts.vm.cpu.2u")]
        flavor: String,
        /// Image id or name (`atelier image list`); default: the built-in JupyterLab image.
        #[arg(long)]
        image: Option<String>,
        /// Work volume: EFS (a directory) or EVS (a disk of --size GB).
        #[arg(long, default_value = "EFS")]
        storage: String,
        /// EVS size in GB.
        #[arg(long)]
        size: Option<i64>,
        #[arg(long)]
        description: Option<String>,
        /// Auto-stop after this long (e.g. 2h, 30m); `none` disables it.
        #[arg(long)]
        duration: Option<String>,
        /// Auto-stop after --duration without activity instead.
        #[arg(long)]
        idle: bool,
        /// Enable SSH with this key pair (repeatable).
        #[arg(long = "ssh-key")]
        ssh_keys: Vec<String>,
        /// Allow SSH only from this address or CIDR (repeatable, at most 5).
        #[arg(long = "allow-ip")]
        allow_ips: Vec<String>,
        /// Follow the start and exit when it is RUNNING (non-zero if it fails).
        #[arg(long)]
        wait: bool,
    },
    /// List the project's notebooks.
    List,
    /// Show one notebook.
    Show { notebook: String },
    /// Start a stopped notebook.
    Start {
        notebook: String,
        /// Auto-stop after this long (e.g. 2h); `none` disables it. Default: the last setting.
        #[arg(long)]
        duration: Option<String>,
        /// Auto-stop after --duration without activity instead.
        #[arg(long)]
        idle: bool,
        /// Show the four start steps and exit when RUNNING (non-zero if the start fails).
        #[arg(long)]
        wait: bool,
    },
    /// Stop a running notebook (its work volume is kept).
    Stop {
        notebook: String,
        #[arg(long)]
        wait: bool,
    },
    /// Delete a notebook and its work volume.
    Delete {
        notebook: String,
        #[arg(long)]
        wait: bool,
    },
    /// Print the link that opens JupyterLab (with its token).
    Open {
        notebook: String,
        /// Also open it in the default browser.
        #[arg(long)]
        browser: bool,
    },
    /// Wait until a notebook reaches a status.
    Wait {
        notebook: String,
        #[arg(long = "for", default_value = "RUNNING")]
        status: String,
        #[arg(long, default_value = "10m")]
        timeout: humantime::Duration,
    },
    /// What happened to a notebook.
    Events { notebook: String },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Show a notebook's auto-stop lease.
    Show { notebook: String },
    /// Push the auto-stop back: `--duration` from now (`none` disables auto-stop).
    Renew {
        notebook: String,
        #[arg(long, default_value = "1h")]
        duration: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FlavorCommand {
    /// The flavors notebooks can use.
    List,
}

#[derive(Subcommand, Debug)]
pub enum KeypairCommand {
    /// Register a public key, or generate a pair (the private key is printed once).
    Create {
        name: String,
        /// A public key file (e.g. ~/.ssh/id_ed25519.pub); absent: generate a pair.
        #[arg(long)]
        public_key: Option<std::path::PathBuf>,
        /// Where to write a generated private key (0600) instead of printing it.
        #[arg(long)]
        private_key_file: Option<std::path::PathBuf>,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

/// A failure to report (exit status 1): the ModelArts `error_code` when the server gave one.
pub struct Failure {
    pub code: Option<String>,
    pub message: String,
}

impl Failure {
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure {
            code: None,
            message: message.into(),
        }
    }

    /// `CODE: message`, or the message alone.
    pub fn text(&self) -> String {
        match &self.code {
            Some(code) => format!("{code}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// `{"error_code","error_msg"}` for `--output json`.
    pub fn json(&self) -> Value {
        json!({
            "error_code": self.code.as_deref().unwrap_or("atelier.cli"),
            "error_msg": self.message,
        })
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Api { code, message, .. } => Failure {
                code: Some(code),
                message,
            },
            other => Failure::msg(other.to_string()),
        }
    }
}

type Outcome = Result<(), Failure>;

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""))
    );
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `2h`, `30m`, `none`/`-1` (no auto-stop) → ms.
fn parse_duration(text: &str) -> Result<i64, Failure> {
    let text = text.trim();
    if matches!(text, "none" | "off" | "-1") {
        return Ok(-1);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| Failure::msg(format!("bad duration `{text}`: {e} (e.g. 2h, 30m, none)")))
}

fn lease_text(notebook: &NotebookResp) -> String {
    let lease = &notebook.lease;
    match (lease.enable, lease.duration) {
        (true, Some(duration)) => {
            let deadline = lease.create_at + duration;
            let left = deadline - now_ms();
            if notebook.status == "RUNNING" && left > 0 {
                format!("{} left", human(left))
            } else {
                format!("{} {}", human(duration), lease.kind.to_lowercase())
            }
        }
        _ => "no auto-stop".to_owned(),
    }
}

fn human(ms: i64) -> String {
    let minutes = ms / 60_000;
    if minutes >= 60 {
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    } else {
        format!("{minutes}m")
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn open_link(notebook: &NotebookResp) -> Option<String> {
    let url = notebook.url.as_deref()?;
    let token = notebook.token.as_deref()?;
    Some(format!("{url}?token={token}"))
}

fn show_notebook(notebook: &NotebookResp, output: Output) {
    if output == Output::Json {
        return print_json(notebook);
    }
    let mut rows = vec![
        ("id", notebook.id.clone()),
        ("name", notebook.name.clone()),
        ("status", notebook.status.clone()),
        ("flavor", notebook.flavor.clone()),
        ("image", notebook.image.name.clone()),
        (
            "volume",
            format!(
                "{} {} GB",
                notebook.volume.category, notebook.volume.capacity
            ),
        ),
        ("lease", lease_text(notebook)),
    ];
    if !notebook.fail_reason.is_empty() {
        rows.push(("fail_reason", notebook.fail_reason.clone()));
    }
    if let Some(reason) = &notebook.stop_reason {
        rows.push(("stop_reason", reason.clone()));
    }
    for endpoint in &notebook.endpoints {
        if let Some(uri) = &endpoint.uri {
            rows.push(("endpoint", format!("{} {uri}", endpoint.service)));
        }
    }
    if notebook.status == "RUNNING"
        && let Some(link) = open_link(notebook)
    {
        rows.push(("open", link));
    }
    let steps: Vec<String> = notebook
        .action_progress
        .iter()
        .map(|p| format!("{}:{}", p.step, p.status))
        .collect();
    if !steps.is_empty() {
        rows.push(("steps", steps.join(" ")));
    }
    for (key, value) in rows {
        println!("{key:<12} {value}");
    }
}

const STEP_NAMES: [&str; 4] = ["storage", "compute", "network", "init"];

/// Whether an error says the notebook does not exist (any more).
fn gone(error: &ClientError) -> bool {
    matches!(error, ClientError::Api { status: 404, .. })
}

/// Follows the progress stream to its end; returns the notebook as it ended, or `None` if it
/// is gone (deleted before or while the stream was read).
async fn follow(client: &Client, id: &str) -> Result<Option<NotebookResp>, Failure> {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let live = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner:.cyan} [{prefix}] {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<ProgressBar> = STEP_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{}/4 {name:<7}", i + 1));
            bar.set_message("waiting");
            if !live {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar
        })
        .collect();
    let mut stream = client.progress(id, Duration::from_secs(120));
    loop {
        let next = match stream.next().await {
            Ok(next) => next,
            Err(error) if gone(&error) => break,
            Err(error) => return Err(error.into()),
        };
        match next {
            Some(ProgressItem::Event(event)) => {
                if let (Some(step), Some(status)) = (event.step, event.step_status.as_deref()) {
                    let index = usize::from(step.clamp(1, 4) - 1);
                    let bar = &bars[index];
                    match status {
                        "PROCESSING" => {
                            bar.enable_steady_tick(Duration::from_millis(100));
                            bar.set_message(event.message.clone());
                        }
                        "COMPLETED" => bar.finish_with_message(format!("✔ {}", event.message)),
                        "FAILED" => bar.abandon_with_message(format!("✘ {}", event.message)),
                        _ => {}
                    }
                    if !live {
                        eprintln!(
                            "[{step}/4 {}] {status}: {}",
                            STEP_NAMES[index], event.message
                        );
                    }
                } else if !live {
                    eprintln!("{}: {}", event.status, event.message);
                }
            }
            Some(ProgressItem::End(_)) | None => break,
        }
    }
    for bar in &bars {
        if !bar.is_finished() {
            bar.abandon();
        }
    }
    match client.show_notebook(id).await {
        Ok(notebook) => Ok(Some(notebook)),
        Err(error) if gone(&error) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The notebook as an operation left it; its disappearance is a failure here.
fn ended(notebook: Option<NotebookResp>, id: &str) -> Result<NotebookResp, Failure> {
    notebook.ok_or_else(|| Failure::msg(format!("notebook {id} was deleted meanwhile")))
}

fn failed(notebook: &NotebookResp) -> bool {
    matches!(
        notebook.status.as_str(),
        "START_FAILED" | "CREATE_FAILED" | "ERROR" | "DELETE_FAILED"
    )
}

/// After `--wait`: the notebook as it ended, or the failure with its reason.
fn settle(notebook: NotebookResp, output: Output) -> Outcome {
    if failed(&notebook) {
        if output == Output::Json {
            print_json(&notebook);
        }
        return Err(Failure::msg(format!(
            "notebook {} is {}: {}",
            notebook.name, notebook.status, notebook.fail_reason
        )));
    }
    if output == Output::Json {
        print_json(&notebook);
    } else if notebook.status == "RUNNING" {
        println!("{} is RUNNING", notebook.name);
        if let Some(link) = open_link(&notebook) {
            println!("open: {link}");
        }
    } else {
        println!("{} is {}", notebook.name, notebook.status);
    }
    Ok(())
}

pub async fn notebook(client: &Client, command: NotebookCommand, output: Output) -> Outcome {
    match command {
        NotebookCommand::Create {
            name,
            flavor,
            image,
            storage,
            size,
            description,
            duration,
            idle,
            ssh_keys,
            allow_ips,
            wait,
        } => {
            let image_id = match image {
                None => "e1a07296-22a8-4f05-8bc8-e936c8e54090".to_owned(),
                Some(text) => {
                    let images = client.list_images().await?;
                    images
                        .data
                        .iter()
                        .find(|i| i.id == text || i.name == text)
                        .map(|i| i.id.clone())
                        .ok_or_else(|| {
                            Failure::msg(format!("no image `{text}` (see `atelier image list`)"))
                        })?
                }
            };
            let mut body = json!({
                "name": name,
                "flavor": flavor,
                "image_id": image_id,
                "volume": {"category": storage.to_uppercase(), "ownership": "MANAGED"},
            });
            if let Some(size) = size {
                body["volume"]["capacity"] = json!(size);
            }
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            if let Some(duration) = duration {
                let ms = parse_duration(&duration)?;
                body["lease"] =
                    json!({"duration": ms, "type": if idle { "IDLE" } else { "TIMING" }});
            }
            if !ssh_keys.is_empty() || !allow_ips.is_empty() {
                body["endpoints"] = json!([{"service": "SSH", "key_pair_names": ssh_keys, "allowed_access_ips": allow_ips}]);
            }
            let created = client.create_notebook(&body).await?;
            if wait {
                let notebook = ended(follow(client, &created.id).await?, &created.id)?;
                return settle(notebook, output);
            }
            match output {
                Output::Json => print_json(&created),
                Output::Table => println!(
                    "created {} ({}), {}",
                    created.name, created.id, created.status
                ),
            }
            Ok(())
        }
        NotebookCommand::List => {
            let all = client.all_notebooks().await?;
            match output {
                Output::Json => print_json(&all),
                Output::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|n| {
                            vec![
                                n.name.clone(),
                                n.id.clone(),
                                n.status.clone(),
                                n.flavor.clone(),
                                lease_text(n),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "ID", "STATUS", "FLAVOR", "LEASE"], &rows);
                }
            }
            Ok(())
        }
        NotebookCommand::Show { notebook } => {
            let id = client.resolve(&notebook).await?;
            show_notebook(&client.show_notebook(&id).await?, output);
            Ok(())
        }
        NotebookCommand::Start {
            notebook,
            duration,
            idle,
            wait,
        } => {
            let id = client.resolve(&notebook).await?;
            let ms = duration.as_deref().map(parse_duration).transpose()?;
            let kind = (ms.is_some() || idle).then_some(if idle { "IDLE" } else { "TIMING" });
            let started = client.start_notebook(&id, ms, kind).await?;
            if wait {
                let notebook = ended(follow(client, &id).await?, &id)?;
                return settle(notebook, output);
            }
            match output {
                Output::Json => print_json(&started),
                Output::Table => println!("{} is {}", started.name, started.status),
            }
            Ok(())
        }
        NotebookCommand::Stop { notebook, wait } => {
            let id = client.resolve(&notebook).await?;
            let stopping = client.stop_notebook(&id).await?;
            if wait {
                let notebook = ended(follow(client, &id).await?, &id)?;
                return settle(notebook, output);
            }
            match output {
                Output::Json => print_json(&stopping),
                Output::Table => println!("{} is {}", stopping.name, stopping.status),
            }
            Ok(())
        }
        NotebookCommand::Delete { notebook, wait } => {
            let id = client.resolve(&notebook).await?;
            let deleting = client.delete_notebook(&id).await?;
            if wait {
                // Still there once the operation ended: DELETE_FAILED (with its reason).
                if let Some(notebook) = follow(client, &id).await? {
                    return settle(notebook, output);
                }
                match output {
                    Output::Json => print_json(&json!({"id": id, "status": "DELETED"})),
                    Output::Table => println!("{} is deleted", deleting.name),
                }
                return Ok(());
            }
            match output {
                Output::Json => print_json(&deleting),
                Output::Table => println!("{} is {}", deleting.name, deleting.status),
            }
            Ok(())
        }
        NotebookCommand::Open { notebook, browser } => {
            let id = client.resolve(&notebook).await?;
            let shown = client.show_notebook(&id).await?;
            if shown.status != "RUNNING" {
                return Err(Failure::msg(format!(
                    "notebook {} is {}; start it first (`atelier notebook start {} --wait`)",
                    shown.name, shown.status, shown.name
                )));
            }
            let link =
                open_link(&shown).ok_or_else(|| Failure::msg("the notebook has no URL yet"))?;
            match output {
                Output::Json => print_json(&json!({"url": link})),
                Output::Table => println!("{link}"),
            }
            if browser {
                let opened = std::process::Command::new("xdg-open")
                    .arg(&link)
                    .status()
                    .is_ok_and(|s| s.success());
                if !opened {
                    eprintln!("could not start a browser (xdg-open); open the link above");
                }
            }
            Ok(())
        }
        NotebookCommand::Wait {
            notebook,
            status,
            timeout,
        } => {
            let id = client.resolve(&notebook).await?;
            let wanted = status.to_uppercase();
            let deadline = tokio::time::Instant::now() + Duration::from(timeout);
            loop {
                let shown = client.show_notebook(&id).await?;
                if shown.status == wanted {
                    show_notebook(&shown, output);
                    return Ok(());
                }
                if failed(&shown) {
                    return Err(Failure::msg(format!(
                        "notebook {} is {}: {}",
                        shown.name, shown.status, shown.fail_reason
                    )));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Failure::msg(format!(
                        "notebook {} is still {} after {timeout}",
                        shown.name, shown.status
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        NotebookCommand::Events { notebook } => {
            let id = client.resolve(&notebook).await?;
            let events = client.events(&id).await?;
            match output {
                Output::Json => print_json(&events),
                Output::Table => {
                    let rows: Vec<Vec<String>> = events
                        .events
                        .iter()
                        .map(|e| {
                            let time = jiff::Timestamp::from_millisecond(e.time)
                                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                                .unwrap_or_default();
                            vec![
                                e.id.to_string(),
                                time,
                                e.kind.clone(),
                                e.reason.clone(),
                                e.message.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["#", "TIME (UTC)", "TYPE", "REASON", "MESSAGE"], &rows);
                }
            }
            Ok(())
        }
    }
}

pub async fn lease(client: &Client, command: LeaseCommand, output: Output) -> Outcome {
    let (id, lease) = match command {
        LeaseCommand::Show { notebook } => {
            let id = client.resolve(&notebook).await?;
            (id.clone(), client.show_lease(&id).await?)
        }
        LeaseCommand::Renew { notebook, duration } => {
            let id = client.resolve(&notebook).await?;
            let ms = parse_duration(&duration)?;
            (id.clone(), client.renew_lease(&id, ms).await?)
        }
    };
    match output {
        Output::Json => print_json(&lease),
        Output::Table => {
            let shown = client.show_notebook(&id).await?;
            println!("{}: {}", shown.name, lease_text(&shown));
        }
    }
    Ok(())
}

pub async fn flavors(client: &Client, output: Output) -> Outcome {
    let flavors = client.list_flavors().await?;
    match output {
        Output::Json => print_json(&flavors.flavors),
        Output::Table => {
            let rows: Vec<Vec<String>> = flavors
                .flavors
                .iter()
                .map(|f| {
                    vec![
                        f.id.clone(),
                        f.vcpus.to_string(),
                        format!("{} GiB", f.memory / 1024 / 1024),
                        f.feature.clone(),
                        if f.sold_out { "sold out" } else { "" }.to_owned(),
                    ]
                })
                .collect();
            print_table(&["ID", "VCPUS", "MEMORY", "FEATURE", ""], &rows);
        }
    }
    Ok(())
}

pub async fn images(client: &Client, output: Output) -> Outcome {
    let images = client.list_images().await?;
    match output {
        Output::Json => print_json(&images.data),
        Output::Table => {
            let rows: Vec<Vec<String>> = images
                .data
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.id.clone(),
                        i.kind.clone(),
                        i.status.clone(),
                    ]
                })
                .collect();
            print_table(&["NAME", "ID", "TYPE", "STATUS"], &rows);
        }
    }
    Ok(())
}

pub async fn keypair(client: &Client, command: KeypairCommand, output: Output) -> Outcome {
    match command {
        KeypairCommand::Create {
            name,
            public_key,
            private_key_file,
        } => {
            let text = public_key
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .map_err(|e| Failure::msg(format!("cannot read {}: {e}", path.display())))
                })
                .transpose()?;
            let created = client.create_keypair(&name, text.as_deref()).await?;
            if let (Some(path), Some(private)) = (&private_key_file, &created.keypair.private_key) {
                write_private_key(path, private)?;
            }
            match output {
                Output::Json => print_json(&created),
                Output::Table => {
                    println!(
                        "key pair {} ({})",
                        created.keypair.name, created.keypair.fingerprint
                    );
                    match (&created.keypair.private_key, &private_key_file) {
                        (Some(_), Some(path)) => {
                            println!("private key written to {}", path.display())
                        }
                        (Some(private), None) => print!("{private}"),
                        _ => {}
                    }
                }
            }
            Ok(())
        }
        KeypairCommand::List => {
            let list = client.list_keypairs().await?;
            match output {
                Output::Json => print_json(&list),
                Output::Table => {
                    let rows: Vec<Vec<String>> = list
                        .keypairs
                        .iter()
                        .map(|k| {
                            vec![
                                k.keypair.name.clone(),
                                k.keypair.algorithm.clone(),
                                k.keypair.fingerprint.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "ALGORITHM", "FINGERPRINT"], &rows);
                }
            }
            Ok(())
        }
        KeypairCommand::Show { name } => {
            let shown = client.show_keypair(&name).await?;
            match output {
                Output::Json => print_json(&shown),
                Output::Table => println!("{}", shown.keypair.public_key),
            }
            Ok(())
        }
        KeypairCommand::Delete { name } => {
            client.delete_keypair(&name).await?;
            match output {
                Output::Json => print_json(&json!({"deleted": name})),
                Output::Table => println!("key pair {name} deleted"),
            }
            Ok(())
        }
    }
}

fn write_private_key(path: &std::path::Path, private: &str) -> Outcome {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::msg(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(private.as_bytes())
        .map_err(|e| Failure::msg(format!("cannot write {}: {e}", path.display())))
}
