//! Flags, logging, wiring and exit codes; the behaviour lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use webhook_exporter::app::{App, ConfigSource};
use webhook_exporter::config::{self, DEFAULT_CONFIG_PATH};
use webhook_exporter::logging::{self, LogFormat, LogLevel};
use webhook_exporter::server::web_config::WebConfig;
use webhook_exporter::shard::{self, Shard, ShardFlags};
use webhook_exporter::shutdown::Hangups;
use webhook_exporter::storage::Storage;
use webhook_exporter::{ProbeRuntimes, demo, probe, report, scheduler};

/// Default `--web.listen-address`: 8916 is outside the 9100-9999 block the Prometheus wiki
/// allocates to exporters, so it collides with none of them.
const DEFAULT_LISTEN: &str = ":8916";

/// Prometheus exporter that calls Divalto ERP webhooks (and any HTTP(S) URL) on a schedule.
#[derive(Parser, Debug)]
#[command(name = "webhook-exporter", version, about)]
struct Cli {
    /// Config file.
    #[arg(long = "config.file", global = true, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
    config_file: PathBuf,
    /// Address to serve /metrics, the status page and the API on (":8916" = all interfaces).
    #[arg(long = "web.listen-address", global = true, value_name = "HOST:PORT")]
    listen_address: Option<String>,
    /// exporter-toolkit web config (TLS, basic auth).
    #[arg(long = "web.config.file", global = true, value_name = "PATH")]
    web_config_file: Option<PathBuf>,
    /// Lowest level logged.
    #[arg(long = "log.level", global = true, value_enum, default_value = "info")]
    log_level: LogLevel,
    /// Threads running probes (0: one per two CPUs, leaving room for the HTTP side and for
    /// local targets; one thread runs thousands of probes a second).
    #[arg(
        long = "probe.threads",
        global = true,
        default_value_t = 0,
        value_name = "N"
    )]
    probe_threads: usize,
    /// Log line format.
    #[arg(
        long = "log.format",
        global = true,
        value_enum,
        default_value = "logfmt"
    )]
    log_format: LogFormat,
    /// Replicas sharing this config: each runs the probes a stable hash of the name gives
    /// its index (--shard.index or --shard.index-from-hostname); with check-config, prints
    /// which replica runs each probe.
    #[arg(long = "shard.count", global = true, value_name = "N")]
    shard_count: Option<u32>,
    /// This replica's index among --shard.count replicas, 0 to N-1.
    #[arg(long = "shard.index", global = true, value_name = "I")]
    shard_index: Option<u32>,
    /// Take the index from the trailing -<number> of the host name ($HOSTNAME, else the
    /// kernel's), as in the StatefulSet pod webhook-exporter-2.
    #[arg(long = "shard.index-from-hostname", global = true)]
    shard_index_from_hostname: bool,
    /// Directory of the store that keeps each probe's recent results, streak, last run
    /// and last success across restarts (created if missing). Without it nothing is kept.
    #[arg(long = "storage.path", global = true, value_name = "DIR")]
    storage_path: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// Parses the command line like clap's `Parser::parse` (which this shadows), except that
    /// a usage error of the `probe` subcommand also lists the known probes.
    fn parse() -> Self {
        match <Self as Parser>::try_parse() {
            Ok(cli) => cli,
            Err(error) => usage_error(&error),
        }
    }
}

/// Prints clap's message (and, for `probe`, the probes of the config) and exits with its
/// code (2 for a usage error, 0 for `--help`).
fn usage_error(error: &clap::Error) -> ! {
    let _ = error.print();
    if error.use_stderr() {
        let (subcommand, config_file) = scan_args(std::env::args().skip(1));
        if subcommand.as_deref() == Some("probe") {
            let path = config_file.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
            match config::load_layout(&path, &config::GoodVersions::default(), &|_| Vec::new()) {
                Ok(layout) => {
                    let names: Vec<&str> = layout
                        .config
                        .probes
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect();
                    eprintln!("known probes: {}", names.join(", "));
                }
                Err(_) => eprintln!(
                    "(the known probes cannot be listed: {} is invalid; see check-config)",
                    path.display()
                ),
            }
        }
    }
    std::process::exit(error.exit_code())
}

/// This replica's shard from the `--shard.*` flags (unsharded without them); a bad
/// combination is a usage error (exit code 2), for the commands that run probes on a
/// schedule. `check-config` takes `--shard.count` alone, to print the split.
fn shard_of(cli: &Cli) -> Shard {
    let flags = ShardFlags {
        count: cli.shard_count,
        index: cli.shard_index,
        index_from_hostname: cli.shard_index_from_hostname,
    };
    let checked = match cli.command {
        Some(Command::CheckConfig) => match cli.shard_count {
            Some(0) => Err(shard::ShardError::ZeroCount),
            _ => Ok(Shard::UNSHARDED),
        },
        Some(Command::Probe { .. }) => Ok(Shard::UNSHARDED),
        Some(Command::Demo) | None => flags.resolve(shard::host_name),
    };
    checked.unwrap_or_else(|error| {
        usage_error(
            &Cli::command().error(clap::error::ErrorKind::ArgumentConflict, error.to_string()),
        )
    })
}

/// The subcommand and `--config.file` of a command line clap refused, read leniently: a
/// word is the subcommand unless it is the value of a flag that takes one.
fn scan_args(args: impl Iterator<Item = String>) -> (Option<String>, Option<PathBuf>) {
    let command = Cli::command();
    let takes_value = |flag: &str| {
        command
            .get_arguments()
            .any(|arg| arg.get_long() == Some(flag) && arg.get_action().takes_values())
    };
    let (mut subcommand, mut config_file) = (None, None);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if let Some(flag) = arg.strip_prefix("--") {
            match flag.split_once('=') {
                Some(("config.file", value)) => config_file = Some(PathBuf::from(value)),
                Some(_) => {}
                None if takes_value(flag) => {
                    let value = args.next();
                    if flag == "config.file" {
                        config_file = value.map(PathBuf::from);
                    }
                }
                None => {}
            }
        } else if subcommand.is_none() && !arg.starts_with('-') {
            subcommand = Some(arg);
        }
    }
    (subcommand, config_file)
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config, print a summary, exit 0 (valid) or 1 (invalid).
    CheckConfig,
    /// Run one probe now and print a step-by-step trace; exit 0 (success) or 1 (failure).
    Probe {
        /// Name of the probe.
        name: String,
    },
    /// Start an embedded simulated Divalto server and probe it.
    Demo,
}

/// glibc's malloc gives each thread that allocates its own arena (up to eight per core), and
/// memory freed in an arena stays with it: at 10,000 probes the probe threads, the HTTP
/// workers and the blocking pool's threads each kept tens of MB of freed run buffers and
/// rendering pieces (malloc_info: 168 MB free of 282 MB held, about 90 MB in use). Capped
/// arenas keep freed memory in common use. Measured with bench/soak.py-style runs at 5,000
/// probes/s: one arena (GLIBC_TUNABLES, quiet machine) 164 → 134 MiB after 4 minutes; two
/// (this call, busy machine) 282 → 219 MiB after 3 minutes. Two, so the two probe threads
/// do not share one lock. Set before any thread starts.
///
/// A fixed mmap threshold: blocks of 256 KiB and more (the parts of a `/metrics` answer, their
/// compressors, a page's row lists) are mapped on their own and unmapped when freed. glibc's
/// default raises the threshold after each such free, so from the first scrape on they came
/// from the arenas and each scrape left a few MB of them there.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other
    // thread exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// See [`limit_malloc_arenas`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

fn main() -> ExitCode {
    limit_malloc_arenas();
    // The HTTP side and reloads run on this runtime, probes on their own threads (see
    // ProbeRuntimes). Two workers, so that while one writes a 30 MB /metrics (rendered piece
    // by piece as the client reads it) or a large page to a client, the other answers
    // /-/healthy and the next scrape: on one thread, bench/run.py measured /-/healthy at p99
    // 94 ms under a loop of page, API and /metrics fetches at 10,000 probes, on two 46 ms.
    // bcrypt checks, a reload's file reads and the large answers (the status page, its JSON,
    // the API's lists) go to the blocking pool. The config at start is read here, before
    // anything serves.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP's default action kills the process: take it over first thing, before the flags,
    // the log set-up and the config (maybe thousands of probes). Subcommands that do not
    // serve leave it unread.
    let hangups = {
        let _in_runtime = runtime.enter();
        Hangups::register()
    };
    let cli = Cli::parse();
    let shard = shard_of(&cli);
    logging::init(cli.log_level, cli.log_format);
    logging::log_panics();
    runtime.block_on(async move {
        match cli.command {
            Some(Command::CheckConfig) => check_config(
                &cli.config_file,
                cli.web_config_file.as_deref(),
                cli.shard_count,
            ),
            Some(Command::Probe { ref name }) => run_probe(&cli.config_file, name).await,
            Some(Command::Demo) => exit_code(run_demo(&cli, shard, hangups).await),
            None => exit_code(run_exporter(&cli, shard, hangups).await),
        }
    })
}

fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|error| {
        tracing::error!(error = format!("{error:#}"), "webhook-exporter failed");
        ExitCode::FAILURE
    })
}

/// `check-config`: every config file (exit 1 when any has an error), and the web config
/// when one is given; with `shard_count`, which replica runs each probe.
fn check_config(
    path: &std::path::Path,
    web_config: Option<&std::path::Path>,
    shard_count: Option<u32>,
) -> ExitCode {
    let mut code = match ConfigSource::File(path.to_owned()).load(&config::GoodVersions::default())
    {
        Ok(layout) => {
            let now = chrono::Utc::now();
            print!("{}", report::config_summary(&layout, now));
            for warning in report::slo_warnings(&layout.config, now) {
                eprintln!("{warning}");
            }
            if let Some(count) = shard_count {
                print!("{}", shard::assignment_report(&layout.config, count));
            }
            if layout.is_complete() {
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", layout.errors());
                ExitCode::FAILURE
            }
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    };
    if let Some(web_path) = web_config {
        match WebConfig::load(web_path) {
            Ok(web) => println!(
                "{}: valid, TLS {}, {} basic-auth user(s)",
                web_path.display(),
                if web.tls.is_some() { "on" } else { "off" },
                web.users.len()
            ),
            Err(error) => {
                eprintln!("invalid web config: {error}");
                code = ExitCode::FAILURE;
            }
        }
    }
    code
}

async fn run_probe(path: &std::path::Path, name: &str) -> ExitCode {
    let config = match ConfigSource::File(path.to_owned()).load(&config::GoodVersions::default()) {
        Ok(layout) => {
            // A refused tenant file does not stop probing the others: say why it is out.
            if !layout.is_complete() {
                eprintln!("{}", layout.errors());
            }
            layout.config
        }
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let Some(spec) = config.probes.iter().find(|p| p.name == name) else {
        let names: Vec<&str> = config.probes.iter().map(|p| p.name.as_str()).collect();
        eprintln!(
            "unknown probe \"{name}\"; known probes: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let started = chrono::Utc::now();
    let outcome = probe::run(spec).await;
    print!("{}", report::probe_trace(spec, &outcome, started));
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The addresses of a Prometheus-style listen address: `:8916` means every interface, a
/// host name (`localhost:8916`) every address it resolves to.
fn listen_addresses(text: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    let invalid = || {
        format!(
            "invalid --web.listen-address \"{text}\": write HOST:PORT, e.g. :8916, localhost:8916 or 127.0.0.1:8916"
        )
    };
    let addresses: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&full)
        .with_context(invalid)?
        .collect();
    anyhow::ensure!(!addresses.is_empty(), "{}: no address", invalid());
    Ok(addresses)
}

/// Binds the listen address (before anything else starts, so a busy port fails fast): the
/// first of its addresses that can be bound.
fn bind(text: &str) -> anyhow::Result<std::net::TcpListener> {
    let addresses = listen_addresses(text)?;
    let mut last_error = None;
    for address in &addresses {
        match std::net::TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some((address, error)),
        }
    }
    // `addresses` is not empty, so a bind was tried and failed.
    let (address, error) = last_error.context("no address to listen on")?;
    Err(error).with_context(|| format!("cannot listen on {address} (--web.listen-address {text})"))
}

async fn run_exporter(cli: &Cli, shard: Shard, hangups: Hangups) -> anyhow::Result<ExitCode> {
    let source = ConfigSource::File(cli.config_file.clone());
    let config = match source.load(&config::GoodVersions::default()) {
        Ok(layout) => layout,
        Err(errors) => {
            for error in &errors.0 {
                tracing::error!(error = %error, "invalid config");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    serve(cli, source, &config, DEFAULT_LISTEN, shard, hangups).await
}

async fn run_demo(cli: &Cli, shard: Shard, hangups: Hangups) -> anyhow::Result<ExitCode> {
    let simulated = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the simulated Divalto server")?;
    let simulated_address = simulated.local_addr()?;
    let stop_simulation = CancellationToken::new();
    let server = demo::spawn_server(simulated, stop_simulation.clone());
    let source = ConfigSource::Demo(simulated_address);
    let config = source
        .load(&config::GoodVersions::default())
        .context("the built-in demo config is invalid")?;
    println!("webhook-exporter demo: simulated Divalto server on http://{simulated_address}");
    let code = serve(cli, source, &config, "127.0.0.1:8916", shard, hangups).await;
    stop_simulation.cancel();
    let _ = server.await;
    code
}

/// Starts the exporter for `config` and serves until a signal.
async fn serve(
    cli: &Cli,
    source: ConfigSource,
    config: &config::Layout,
    default_listen: &str,
    shard: Shard,
    hangups: Hangups,
) -> anyhow::Result<ExitCode> {
    // The store first: an unusable one stops the start before anything listens or runs.
    let storage = match cli.storage_path.as_deref().map(Storage::open).transpose() {
        Ok(storage) => storage,
        Err(error) => {
            tracing::error!(error = %error, "cannot start");
            return Ok(ExitCode::FAILURE);
        }
    };
    let listener = bind(cli.listen_address.as_deref().unwrap_or(default_listen))?;
    let shutdown = shutdown_on_signal();
    let threads = match cli.probe_threads {
        0 => (std::thread::available_parallelism().map_or(1, std::num::NonZero::get) / 2).max(1),
        n => n,
    };
    let probe_runtimes = ProbeRuntimes::start(threads).context("cannot start the probe threads")?;
    let app = match App::start(
        source,
        config,
        cli.web_config_file.clone(),
        scheduler::http_runner(),
        probe_runtimes.handles(),
        shard,
        storage,
        shutdown.clone(),
    ) {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = %error, "cannot start");
            return Ok(ExitCode::FAILURE);
        }
    };
    if matches!(cli.command, Some(Command::Demo)) {
        let local = listener.local_addr()?;
        let scheme = if app.serves_tls() { "https" } else { "http" };
        println!("  status page  {scheme}://{local}/");
        println!("  metrics      {scheme}://{local}/metrics");
        println!("Probes run every few seconds; press Ctrl-C to stop.");
    }
    app.run(listener, shutdown, hangups).await?;
    drop(probe_runtimes);
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled by SIGTERM or SIGINT; a second signal exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutting down: no new runs, waiting for runs in flight (signal again to exit now)"
        );
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
