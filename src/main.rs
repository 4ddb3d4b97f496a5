use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kopd::config::{ConfigSources, KEYS};

#[derive(Parser)]
#[command(name = "kopd", version, about = "Kafka-protocol gateway storing data in Apache Pulsar's layout")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// List every config key with its default and meaning.
    Config,
    /// Show every consumer group's durable cursor per partition (from a running kopd).
    Cursors(CursorsArgs),
}

#[derive(clap::Args)]
struct CursorsArgs {
    /// The running kopd's admin.listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    admin: String,
    /// Only this topic (its Kafka name).
    #[arg(long)]
    topic: Option<String>,
    /// Only this consumer group.
    #[arg(long)]
    group: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Core 0's listener HOST:PORT; core i listens on PORT + i.
    #[arg(long)]
    listen: Option<String>,
    /// Host advertised to clients.
    #[arg(long)]
    advertised_host: Option<String>,
    /// Cores to run (0 = all online CPUs).
    #[arg(long)]
    cores: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<String>,
    /// Ledger store: local.
    #[arg(long)]
    storage: Option<String>,
    /// Any config key, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn load(args: &ServeArgs) -> Result<kopd::config::Config, kopd::config::ConfigError> {
    let mut sources = ConfigSources::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|e| kopd::config::ConfigError {
            key: "--config".into(),
            problem: format!("cannot read {}: {e}", path.display()),
        })?;
        sources.add_toml(&text)?;
    }
    sources.add_env(|k| std::env::var(k).ok())?;
    let flags = [
        ("listen", &args.listen),
        ("advertised.host", &args.advertised_host),
        ("cores", &args.cores),
        ("data.dir", &args.data_dir),
        ("storage", &args.storage),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            sources.set(key, v.clone())?;
        }
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(kopd::config::ConfigError { key: kv.clone(), problem: "--set takes KEY=VALUE".into() });
        };
        sources.set(k.trim(), v.trim())?;
    }
    sources.resolve(kopd::runtime::online_cpus())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            for (k, d, doc) in KEYS {
                println!("{k} = {d:?}    # {doc} (env {})", kopd::config::env_name(k));
            }
            ExitCode::SUCCESS
        }
        Command::Cursors(args) => match kopd::admin::client::print_cursors(&args.admin, args.topic, args.group) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kopd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            let config = match load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("kopd: {e}");
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            match kopd::server::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
