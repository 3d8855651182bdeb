//! The `pincer` command: `pincer serve` runs the gateway; `pincer bench`
//! measures it; `pincer plugins` inspects and installs plugins; `pincer
//! pairing` approves channel senders.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pincer::config::FileConfig;
use pincer::events::LocalBus;
use pincer::gateway::launch::Options;
use pincer::gateway::logbuf::LogBuffer;
use pincer::netguard::NetGuard;
use pincer::plugins::RuntimeConfig;
use pincer::plugins::registry::DEFAULT_PLUGIN_NICE;
use pincer::runtime::{Runtime, RuntimeOptions};

#[derive(Parser)]
#[command(
    name = "pincer",
    version,
    about = "WebAssembly plugin-host messaging gateway"
)]
struct Cli {
    /// Log line format: `text` (coloured only on a terminal) or `json`
    /// (one object per line).
    #[arg(long, global = true, env = "PINCER_LOG_FORMAT", value_enum, default_value_t = pincer::logging::LogFormat::Text)]
    log_format: pincer::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Data directory (database, compile cache, plugin data).
    #[arg(long, env = "PINCER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Plugins directory, watched for changes (default: <data-dir>/plugins).
    #[arg(long, env = "PINCER_PLUGINS_DIR")]
    plugins_dir: Option<PathBuf>,
    /// Configuration file (TOML).
    #[arg(long, env = "PINCER_CONFIG")]
    config: Option<PathBuf>,
    /// Extra address ranges plugins may reach (comma-separated CIDRs).
    #[arg(long, env = "PINCER_PLUGIN_ALLOW_CIDRS")]
    allow_cidrs: Option<String>,
    /// Where state lives: `postgres://user:password@host:port/db`, or a
    /// SQLite file (default: <data-dir>/pincer.db).
    #[arg(long, env = "PINCER_STORE", hide_env_values = true, value_name = "URL")]
    store: Option<String>,
}

/// Where a running gateway is, for commands that talk to one.
#[derive(clap::Args, Clone)]
struct Remote {
    /// The gateway's HTTP address (default: the configured listen address,
    /// else http://127.0.0.1:18789).
    #[arg(long, env = "PINCER_URL")]
    url: Option<String>,
    /// The gateway token (default: the configured token, else the
    /// generated one in <data-dir>/gateway-token).
    #[arg(long, env = "PINCER_GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args, Clone)]
struct GatewayArgs {
    /// Listen address for WebSocket and HTTP (default 127.0.0.1:18789).
    #[arg(long, env = "PINCER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Shared token operators must present (required off loopback unless a
    /// password is set).
    #[arg(long, env = "PINCER_GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Shared password (alternative to a token).
    #[arg(long, env = "PINCER_GATEWAY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Run without a token or password (loopback only). Without this, and
    /// without a token or password, a token is generated on first start and
    /// kept in <data-dir>/gateway-token.
    #[arg(long, env = "PINCER_NO_AUTH")]
    no_auth: bool,
    /// This node's name in a cluster (`--store postgres://...`): shown in
    /// presence and `channels.status` (default: the host name).
    #[arg(long, env = "PINCER_NODE_NAME")]
    node_name: Option<String>,
    /// Model provider: `echo` (default, offline) or `openai`.
    #[arg(long, env = "PINCER_PROVIDER")]
    provider: Option<String>,
    /// Serve a Control UI build (such as OpenClaw's `dist/control-ui`) at
    /// `/` on the gateway's port.
    #[arg(long, env = "PINCER_CONTROL_UI", value_name = "DIR")]
    control_ui: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: load plugins, hot-reload them, monitor channels.
    Serve {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Do not install the bundled plugins into a new plugins directory.
        #[arg(long)]
        no_bundled: bool,
    },
    /// Plugin tools.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Plugin development: create a project, build it, check a component.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Create or upgrade the store's schema, then exit (`serve` also does
    /// it on start; run this first when several gateways share one
    /// PostgreSQL database, or to check a URL).
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Channel sender pairing: approve unknown senders who got a code
    /// (works on the data directory, with or without a running gateway).
    Pairing {
        #[command(subcommand)]
        command: PairingCommand,
    },
    /// Benchmarks (results go to stdout as a Markdown table).
    Bench {
        /// What to measure.
        #[arg(value_enum)]
        what: BenchWhat,
        /// Events per throughput run (`webhooks` only; default 5000).
        #[arg(long)]
        events: Option<usize>,
        /// Smaller sizes, about a minute (`channels`, `store` and `cluster`
        /// only).
        #[arg(long, conflicts_with = "smoke")]
        quick: bool,
        /// Tiny sizes that only check every path runs (`channels` only).
        #[arg(long)]
        smoke: bool,
        /// PostgreSQL database to measure (`store` only; default: a
        /// throwaway local server).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// One density measurement, run by `bench channels` in a child
        /// process (`gateway|bare:BOTS:WINDOW_MS`).
        #[arg(long, hide = true)]
        part: Option<String>,
        /// Run only the `sockets` section (`channels` only): idle
        /// host-managed WebSocket sessions, this many (default: 1000, or
        /// 200 with `--quick`).
        #[arg(long)]
        sockets: Option<Option<usize>>,
        /// Run only the Discord throughput rows (`channels` only).
        #[arg(long, conflicts_with = "sockets")]
        discord: bool,
        /// Idle connections the idle-connections part holds (`gateway`
        /// only; default 100000, capped by the descriptor limit).
        #[arg(long)]
        idle: Option<usize>,
        /// Run only the idle-connections part (`gateway` only).
        #[arg(long)]
        idle_only: bool,
        /// The server child of the idle-connections part (`gateway|echo`).
        #[arg(long, hide = true)]
        serve_child: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load every plugin in the directory once and print the plugin list.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Install a plugin component into a running gateway (the console's
    /// upload; in a cluster every node loads it).
    Install {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        remote: Remote,
        /// The component file (`NAME.wasm`).
        file: PathBuf,
        /// Install under this name (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a plugin from a running gateway (every node of a cluster).
    Remove {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        remote: Remote,
        /// The plugin's name (its file stem in the plugins directory).
        name: String,
    },
    /// Write the bundled plugins into the plugins directory.
    InstallBundled {
        #[command(flatten)]
        common: Common,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin project that builds and works as it is.
    New {
        /// The language.
        #[arg(long, value_enum)]
        lang: pincer::plugin_dev::Lang,
        /// Channel or tool.
        #[arg(long, value_enum)]
        kind: PluginKindArg,
        /// The plugin's name (letters, digits, `-`, `_`); also the directory.
        name: String,
        /// Where to create the project directory (default: here).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the project in DIR with its language's toolchain, into
    /// DIR/build/<name>.wasm and <name>.toml.
    Build {
        /// The project directory (default: here).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Tell whether a component fits this host (exit status 1 if not).
    Check {
        /// The component file.
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum PluginKindArg {
    Channel,
    Tool,
}

/// `pincer plugin …`.
fn plugin(command: PluginCommand) -> anyhow::Result<std::process::ExitCode> {
    use pincer::plugin_dev::{builder, check, scaffold};
    use pincer::plugins::PluginKind;
    match command {
        PluginCommand::New {
            lang,
            kind,
            name,
            dir,
        } => {
            let kind = match kind {
                PluginKindArg::Channel => PluginKind::Channel,
                PluginKindArg::Tool => PluginKind::Tool,
            };
            let created = scaffold::new_project(&dir, lang, kind, &name)?;
            println!(
                "created {}
next: cd {} && pincer plugin build",
                created.display(),
                created.display()
            );
        }
        PluginCommand::Build { dir } => {
            let built = builder::build(&dir)?;
            println!(
                "built {} ({} bytes, {:.1} s)
manifest {}
install: cp {} {} <plugins dir>/",
                built.wasm.display(),
                std::fs::metadata(&built.wasm).map(|m| m.len()).unwrap_or(0),
                built.duration.as_secs_f64(),
                built.manifest.display(),
                built.wasm.display(),
                built.manifest.display(),
            );
        }
        PluginCommand::Check { file, json } => {
            let report = check::check(&file);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if !report.loads() {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum PairingCommand {
    /// Pending codes and approved senders of a channel.
    List {
        /// Channel name (e.g. `telegram`).
        channel: String,
        /// Channel account (default: every account).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Approve the sender who was given CODE: their next message is answered.
    Approve {
        /// Channel name.
        channel: String,
        /// The 8-character code the sender received.
        code: String,
        /// Channel account (default `default`).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Drop a pending code without approving its sender.
    Dismiss {
        /// Channel name.
        channel: String,
        /// The code.
        code: String,
        /// Channel account (default `default`).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// `pincer pairing …`: prints JSON.
/// `pincer migrate`: open the store (which migrates it) and say where.
async fn migrate(common: &Common) -> anyhow::Result<()> {
    let r = resolve(common)?;
    std::fs::create_dir_all(&r.data_dir)
        .with_context(|| format!("creating {}", r.data_dir.display()))?;
    let store = tokio::task::spawn_blocking(move || {
        pincer::store::open(&r.data_dir, &r.file.store).context("opening the store")
    })
    .await
    .context("the migration task failed")??;
    println!("{}: schema up to date", store.location());
    Ok(())
}

fn pairing(command: PairingCommand) -> anyhow::Result<()> {
    use pincer::channels::pairing::Pairing;
    let open = |common: &Common| -> anyhow::Result<Pairing> {
        let resolved = resolve(common)?;
        Ok(Pairing::open(&resolved.data_dir, &resolved.file.store)?)
    };
    let out = match command {
        PairingCommand::List {
            channel,
            account,
            common,
        } => serde_json::to_value(open(&common)?.list(&channel, account.as_deref())?)?,
        PairingCommand::Approve {
            channel,
            code,
            account,
            common,
        } => {
            let a = open(&common)?.approve(&channel, account.as_deref(), &code)?;
            eprintln!("approved {} on {channel}", a.sender);
            serde_json::to_value(a)?
        }
        PairingCommand::Dismiss {
            channel,
            code,
            account,
            common,
        } => serde_json::to_value(open(&common)?.dismiss(&channel, account.as_deref(), &code)?)?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum BenchWhat {
    /// Plugin runtime: compile, load, instantiate, call, reload, restart, memory.
    Plugins,
    /// Gateway over loopback: handshakes, health requests, memory, fan-out.
    Gateway,
    /// Outgoing webhooks: delivery throughput, fan-out, event-to-receipt latency.
    Webhooks,
    /// A healthy client's latency and the gateway's memory under attack.
    Attack,
    /// Python and TypeScript plugins against the Rust plugin of the same job.
    Languages,
    /// Telegram and WhatsApp end to end, and many idle polling bots.
    Channels,
    /// The store: the same workloads on SQLite and PostgreSQL.
    Store,
    /// Run events fanned out to many clients: one node on SQLite, one
    /// and three nodes on PostgreSQL.
    Cluster,
}

struct Resolved {
    file: FileConfig,
    data_dir: PathBuf,
    plugins_dir: PathBuf,
    allow: Vec<ipnet::IpNet>,
}

fn resolve(common: &Common) -> anyhow::Result<Resolved> {
    let mut file = match &common.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    if let Some(url) = &common.store {
        file.store.url = Some(url.as_str().into());
    }
    let data_dir = common
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(".pincer"));
    let plugins_dir = common
        .plugins_dir
        .clone()
        .or_else(|| file.plugins_dir.clone())
        .unwrap_or_else(|| data_dir.join("plugins"));
    let mut cidrs = file.allow_cidrs.join(",");
    if let Some(extra) = &common.allow_cidrs {
        cidrs = format!("{cidrs},{extra}");
    }
    let allow = NetGuard::parse_cidrs(&cidrs).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Resolved {
        file,
        data_dir,
        plugins_dir,
        allow,
    })
}

/// The admin client for `pincer plugins install|remove`: the URL and token
/// given, else the configuration's listen address and token, else the
/// defaults and the generated token file.
fn admin_client(
    common: &Common,
    remote: &Remote,
) -> anyhow::Result<pincer::admin_client::AdminClient> {
    let r = resolve(common)?;
    let url = remote
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", r.file.gateway.listen));
    let token = remote
        .token
        .clone()
        .or_else(|| {
            r.file
                .gateway
                .token
                .as_ref()
                .map(|t| t.expose().to_string())
        })
        .or_else(|| pincer::admin_client::token_from_data_dir(&r.data_dir));
    Ok(pincer::admin_client::AdminClient::new(&url, token)?)
}

async fn build_runtime(r: &Resolved) -> anyhow::Result<Arc<Runtime>> {
    std::fs::create_dir_all(&r.data_dir)
        .with_context(|| format!("creating data dir {}", r.data_dir.display()))?;
    let store = pincer::store::open(&r.data_dir, &r.file.store).context("opening the store")?;
    Runtime::new(RuntimeOptions {
        plugins_dir: r.plugins_dir.clone(),
        runtime: RuntimeConfig {
            data_dir: Some(r.data_dir.clone()),
            settings: r.file.plugins.clone(),
            allow_cidrs: r.allow.clone(),
            clock: pincer::clock::system(),
            quotas: r.file.plugin_quotas,
            plugin_threads: r.file.plugin_threads,
            plugin_nice: r.file.plugin_nice.unwrap_or(DEFAULT_PLUGIN_NICE),
            sandbox: r.file.sandbox,
        },
        health: r.file.health,
        kv: store.clone(),
        pairing: store.clone(),
        inbox: store.clone(),
        outbox: store,
        events: Arc::new(LocalBus::default()),
    })
}

async fn serve(
    common: Common,
    gw: GatewayArgs,
    no_bundled: bool,
    logs: Arc<LogBuffer>,
    log_format: pincer::logging::LogFormat,
) -> anyhow::Result<()> {
    let r = resolve(&common)?;
    let mut opts = Options::new(&r.data_dir);
    opts.plugins_dir = r.plugins_dir.clone();
    opts.install_bundled = !no_bundled;
    opts.gateway = r.file.gateway.clone();
    opts.agent = r.file.agent.clone();
    opts.webhooks = r.file.webhooks.clone();
    opts.store = r.file.store.clone();
    opts.health = r.file.health;
    opts.plugins = r.file.plugins.clone();
    opts.allow_cidrs = r.allow.clone();
    opts.plugin_quotas = r.file.plugin_quotas;
    opts.plugin_threads = r.file.plugin_threads;
    opts.plugin_nice = r.file.plugin_nice.unwrap_or(DEFAULT_PLUGIN_NICE);
    opts.sandbox = r.file.sandbox;
    opts.logs = Some(logs);
    opts.config_file = common.config.clone();
    if let Some(listen) = gw.listen {
        opts.gateway.listen = listen;
    }
    if let Some(token) = gw.token {
        opts.gateway.token = Some(token.into());
    }
    if let Some(password) = gw.password {
        opts.gateway.password = Some(password.into());
    }
    if gw.no_auth {
        opts.gateway.no_auth = true;
    }
    if let Some(name) = gw.node_name {
        opts.gateway.cluster.node_name = Some(name);
    }
    // The command line is never open by default: with no token, password
    // or --no-auth, use (or create) <data_dir>/gateway-token.
    opts.token_file = true;
    if let Some(p) = gw.provider {
        opts.agent.provider = p;
    }
    if let Some(dir) = gw.control_ui {
        anyhow::ensure!(
            dir.join("index.html").is_file(),
            "--control-ui {}: no index.html in that directory",
            dir.display()
        );
        opts.gateway.control_ui = Some(dir);
    }
    #[cfg(unix)]
    let sighup = common
        .config
        .is_some()
        .then(pincer::config_reload::listen_for_sighup)
        .flatten();
    let running = pincer::gateway::launch::start(opts).await?;
    match &running.token_file {
        // Said once, when generated; later starts only say where it is.
        // With `--log-format json` every stderr line stays one JSON object.
        Some(t) if t.created && log_format == pincer::logging::LogFormat::Json => tracing::info!(
            path = %t.path.display(),
            url = %format!("http://{}/#token={}", running.addr, t.token.expose()),
            "generated a gateway token, kept in this file (mode 0600): use it as `Authorization: Bearer <token>` on /v1 and as auth.token in connect"
        ),
        Some(t) if t.created => eprintln!(
            "\nGenerated a gateway token, kept in {} (mode 0600). Use it as \
             `Authorization: Bearer <token>` on /v1 and as auth.token in connect:\n\n    \
             http://{}/#token={}\n",
            t.path.display(),
            running.addr,
            t.token.expose()
        ),
        Some(t) => tracing::info!(path = %t.path.display(), "using the gateway token in this file"),
        None => {}
    }
    for p in running.gateway.runtime.plugins.list() {
        tracing::info!(plugin = %p.name, kind = ?p.kind, version = ?p.version, state = ?p.state, "plugin");
    }
    tracing::info!(
        addr = %running.addr,
        plugins_dir = %r.plugins_dir.display(),
        "pincer running: WebSocket and HTTP on ws://{0} and http://{0}; drop plugins into the plugins directory to load them",
        running.addr
    );
    #[cfg(unix)]
    if let (Some(reloader), Some(hup)) = (running.gateway.config_reload.get(), sighup) {
        tokio::spawn(pincer::config_reload::reload_on_sighup(
            hup,
            reloader.clone(),
        ));
    }
    running.wait(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Idle blocking threads (store and key-value calls) exit after 1 s:
        // with tokio's default of 10 s, steady light traffic (1,000 socket
        // accounts heartbeating) keeps every thread a burst ever started
        // alive, each with the stack it touched.
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()
        .context("starting the runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let logs = LogBuffer::new();
    pincer::logging::init(cli.log_format, logs.clone());
    let done: anyhow::Result<()> = match cli.command {
        Command::Plugin { command } => return plugin(command),
        Command::Serve {
            common,
            gateway,
            no_bundled,
        } => serve(common, gateway, no_bundled, logs, cli.log_format).await,
        Command::Plugins { command } => match command {
            PluginsCommand::List { common } => {
                let r = resolve(&common)?;
                let runtime = build_runtime(&r).await?;
                runtime.load_dir().await?;
                println!("{}", serde_json::to_string_pretty(&runtime.plugins.list())?);
                Ok(())
            }
            PluginsCommand::Install {
                common,
                remote,
                file,
                name,
            } => {
                let client = admin_client(&common, &remote)?;
                let name = match name.or_else(|| pincer::admin_client::name_from_path(&file)) {
                    Some(n) => n,
                    None => anyhow::bail!("no plugin name in {}: give --name", file.display()),
                };
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let manifest = file.with_extension("toml");
                if manifest.exists() {
                    eprintln!(
                        "note: {} is not sent (uploads carry the component only); grant the plugin in the [plugins.{name}] table of each gateway's configuration, or copy the manifest into its plugins directory",
                        manifest.display()
                    );
                }
                let answer = client.install(&name, bytes).await?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
                Ok(())
            }
            PluginsCommand::Remove {
                common,
                remote,
                name,
            } => {
                let client = admin_client(&common, &remote)?;
                let answer = client.remove(&name).await?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
                Ok(())
            }
            PluginsCommand::InstallBundled { common, force } => {
                let r = resolve(&common)?;
                let written = pincer::bundled::install(&r.plugins_dir, force)?;
                println!("installed {written:?} into {}", r.plugins_dir.display());
                Ok(())
            }
        },
        Command::Migrate { common } => migrate(&common).await,
        Command::Pairing { command } => pairing(command),
        Command::Bench {
            what,
            events,
            quick,
            smoke,
            part,
            store,
            sockets,
            discord,
            idle,
            idle_only,
            serve_child,
        } => match what {
            BenchWhat::Gateway if serve_child.is_some() => {
                let kind = serve_child.unwrap_or_default();
                let n = idle.unwrap_or(pincer::bench::idle::DEFAULT_IDLE);
                pincer::bench::idle::serve_child(&kind, n).await
            }
            _ if idle.is_some() || idle_only || serve_child.is_some() => {
                if !matches!(what, BenchWhat::Gateway) {
                    anyhow::bail!("--idle and --idle-only apply to `pincer bench gateway` only")
                }
                if events.is_some() || quick || smoke || part.is_some() || store.is_some() {
                    anyhow::bail!("`pincer bench gateway` takes only --idle and --idle-only")
                }
                pincer::bench::gateway::gateway(idle, idle_only).await
            }
            BenchWhat::Plugins
            | BenchWhat::Gateway
            | BenchWhat::Attack
            | BenchWhat::Channels
            | BenchWhat::Languages
            | BenchWhat::Store
            | BenchWhat::Cluster
                if events.is_some() =>
            {
                anyhow::bail!("--events applies to `pincer bench webhooks` only")
            }
            BenchWhat::Store if smoke || part.is_some() => {
                anyhow::bail!("--smoke and --part apply to `pincer bench channels` only")
            }
            BenchWhat::Store => pincer::bench::store::store(store, quick).await,
            BenchWhat::Cluster if smoke || part.is_some() || sockets.is_some() || discord => {
                anyhow::bail!("`pincer bench cluster` takes only --quick")
            }
            BenchWhat::Cluster if store.is_some() => {
                anyhow::bail!("--store applies to `pincer bench store` only")
            }
            BenchWhat::Cluster => pincer::bench::cluster::cluster(quick).await,
            _ if store.is_some() => anyhow::bail!("--store applies to `pincer bench store` only"),
            BenchWhat::Channels => {
                use pincer::bench::channels::{Sizes, channels, part as run_part};
                if let Some(spec) = part {
                    return run_part(&spec)
                        .await
                        .map(|()| std::process::ExitCode::SUCCESS);
                }
                let sizes = if smoke {
                    Sizes::smoke()
                } else if quick {
                    Sizes::quick()
                } else {
                    Sizes::full()
                };
                if discord {
                    return pincer::bench::channels::discord_only(sizes)
                        .await
                        .map(|_| std::process::ExitCode::SUCCESS);
                }
                if let Some(n) = sockets {
                    let n = n.unwrap_or(sizes.sessions);
                    return pincer::bench::channels::sockets_only(n, true)
                        .await
                        .map(|_| std::process::ExitCode::SUCCESS);
                }
                channels(sizes, true).await.map(|_| ())
            }
            _ if quick || smoke || part.is_some() || sockets.is_some() || discord => {
                anyhow::bail!(
                    "--quick, --smoke, --part, --sockets and --discord apply to `pincer bench channels` only"
                )
            }
            BenchWhat::Plugins => pincer::bench::plugins::plugins().await,
            BenchWhat::Gateway => pincer::bench::gateway::gateway(None, false).await,
            BenchWhat::Attack => pincer::bench::attack::attack().await,
            BenchWhat::Languages => pincer::bench::languages::languages().await,
            BenchWhat::Webhooks => {
                let n = events.unwrap_or(pincer::bench::webhooks::DEFAULT_EVENTS);
                pincer::bench::webhooks::webhooks(n).await
            }
        },
    };
    done.map(|()| std::process::ExitCode::SUCCESS)
}
