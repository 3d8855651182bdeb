//! The `pincer` command: `pincer serve` runs the gateway; `pincer bench`
//! measures it; `pincer plugins` inspects and installs plugins.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pincer::config::FileConfig;
use pincer::events::LocalBus;
use pincer::netguard::NetGuard;
use pincer::plugins::RuntimeConfig;
use pincer::runtime::{Runtime, RuntimeOptions};
use pincer::store::SqliteStore;

#[derive(Parser)]
#[command(
    name = "pincer",
    version,
    about = "WebAssembly plugin-host messaging gateway"
)]
struct Cli {
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
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: load plugins, hot-reload them, monitor channels.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Do not install the bundled plugins into a new plugins directory.
        #[arg(long)]
        no_bundled: bool,
    },
    /// Plugin tools.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Benchmarks (results go to stdout as a Markdown table).
    Bench {
        /// What to measure.
        #[arg(value_enum)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load every plugin in the directory once and print the plugin list.
    List {
        #[command(flatten)]
        common: Common,
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

#[derive(clap::ValueEnum, Clone, Copy)]
enum BenchWhat {
    /// Plugin runtime: compile, load, instantiate, call, reload, restart, memory.
    Plugins,
}

struct Resolved {
    file: FileConfig,
    data_dir: PathBuf,
    plugins_dir: PathBuf,
    allow: Vec<ipnet::IpNet>,
}

fn resolve(common: &Common) -> anyhow::Result<Resolved> {
    let file = match &common.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
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

async fn build_runtime(r: &Resolved) -> anyhow::Result<Arc<Runtime>> {
    std::fs::create_dir_all(&r.data_dir)
        .with_context(|| format!("creating data dir {}", r.data_dir.display()))?;
    let store = SqliteStore::open(&r.data_dir.join("pincer.db")).context("opening the database")?;
    Runtime::new(RuntimeOptions {
        plugins_dir: r.plugins_dir.clone(),
        runtime: RuntimeConfig {
            data_dir: Some(r.data_dir.clone()),
            settings: r.file.plugins.clone(),
            allow_cidrs: r.allow.clone(),
            clock: pincer::clock::system(),
        },
        health: r.file.health,
        kv: Arc::new(store),
        events: Arc::new(LocalBus::default()),
    })
}

async fn serve(common: Common, no_bundled: bool) -> anyhow::Result<()> {
    let r = resolve(&common)?;
    if !no_bundled && !r.plugins_dir.exists() {
        let written = pincer::bundled::install(&r.plugins_dir, false).with_context(|| {
            format!(
                "installing bundled plugins into {}",
                r.plugins_dir.display()
            )
        })?;
        tracing::info!(dir = %r.plugins_dir.display(), plugins = ?written, "installed bundled plugins");
    }
    let runtime = build_runtime(&r).await?;
    for (path, e) in runtime.load_dir().await? {
        tracing::error!(path = %path.display(), error = %e, "plugin not loaded");
    }
    let _watch = runtime.watch(Duration::from_millis(300))?;
    let monitor = runtime.health.spawn();
    for p in runtime.plugins.list() {
        tracing::info!(plugin = %p.name, kind = ?p.kind, version = ?p.version, state = ?p.state, "plugin");
    }
    tracing::info!(plugins_dir = %r.plugins_dir.display(), "pincer running; drop plugins into the plugins directory to load them");
    shutdown_signal().await;
    tracing::info!("shutting down");
    monitor.abort();
    for ch in runtime.channels.all() {
        ch.stop().await;
    }
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { common, no_bundled } => serve(common, no_bundled).await,
        Command::Plugins { command } => match command {
            PluginsCommand::List { common } => {
                let r = resolve(&common)?;
                let runtime = build_runtime(&r).await?;
                runtime.load_dir().await?;
                println!("{}", serde_json::to_string_pretty(&runtime.plugins.list())?);
                Ok(())
            }
            PluginsCommand::InstallBundled { common, force } => {
                let r = resolve(&common)?;
                let written = pincer::bundled::install(&r.plugins_dir, force)?;
                println!("installed {written:?} into {}", r.plugins_dir.display());
                Ok(())
            }
        },
        Command::Bench { what } => match what {
            BenchWhat::Plugins => pincer::bench::plugins().await,
        },
    }
}
