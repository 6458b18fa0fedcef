//! `nanoscale proxy`: the traffic layer as its own process (started and
//! supervised by the agent; runnable by hand for benchmarks and debugging).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use nanoscale_proxy::access_log::Destination;
use nanoscale_proxy::ProxyConfig;

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Directory of the proxy's state: lock, control socket, last route table.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// External listener (`off` for none).
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: Listener,
    /// Internal service network listener for `<service>.svc.internal` (`off` for none).
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "off", value_parser = parse_listen)]
    internal_listen: Listener,
    /// DNS responder for `*.svc.internal` (`off` for none).
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "off", value_parser = parse_listen)]
    dns_listen: Listener,
    /// Prometheus `/metrics` listener (`off` for none; metrics are also on the control socket).
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "off", value_parser = parse_listen)]
    metrics_listen: Listener,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Access log: `off`, `stdout` or an absolute file path.
    #[arg(long, value_name = "DEST", default_value = "stdout")]
    access_log: Destination,
    /// A file access log is rotated past this size (MiB): `<file>.1`, `.2`, …
    #[arg(long, value_name = "MIB", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    access_log_max_mb: u64,
    /// Rotated access logs kept (the oldest beyond is deleted).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    access_log_keep: u32,
    /// text or json (diagnostics on stderr).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: String,
}

/// A listen address or `off`.
#[derive(Debug, Clone, Copy)]
pub struct Listener(pub Option<SocketAddr>);

pub fn parse_listen(value: &str) -> Result<Listener, String> {
    if value == "off" {
        return Ok(Listener(None));
    }
    value
        .parse()
        .map(|address| Listener(Some(address)))
        .map_err(|_| format!("{value:?} is not ADDR:PORT (e.g. 127.0.0.1:8080) or off"))
}

pub fn main(args: ProxyArgs) -> ExitCode {
    let format = match crate::config::LogFormat::from_flag(&args.log_format) {
        Ok(format) => format,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(64);
        }
    };
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 || workers > 1024 {
        eprintln!("error: --workers must be between 1 and 1024");
        return ExitCode::from(64);
    }
    // One worker: a current-thread runtime (the same single thread, without the
    // work-stealing scheduler's cross-thread bookkeeping).
    let built = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = ProxyConfig {
        state_dir: args.state_dir,
        listen: args.listen.0,
        internal_listen: args.internal_listen.0,
        dns_listen: args.dns_listen.0,
        metrics_listen: args.metrics_listen.0,
        access_log: args.access_log,
        access_log_rotation: nanoscale_proxy::access_log::Rotation {
            max_bytes: args.access_log_max_mb << 20,
            keep: args.access_log_keep,
        },
    };
    runtime.block_on(async move {
        crate::up::init_logging(format);
        match nanoscale_proxy::run(config, crate::up::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error:#}");
                eprintln!("error: proxy: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
}
