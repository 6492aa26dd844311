//! The `switchyard` command: parse arguments, load the configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use switchyard::config::{Config, LogFormat};

const USAGE: &str = "\
switchyard: service-discovery load balancer for Marathon/Mesos

usage:
  switchyard [--config FILE]         run (without --config: the embedded default)
  switchyard demo [--config FILE]    run, and start demo backends for loopback tasks
  switchyard check --config FILE     validate a configuration file and exit
  switchyard --help | --version
";

enum Command {
    Run { demo: bool },
    Check,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut command = Command::Run { demo: false };
    let mut config_path: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "demo" => command = Command::Run { demo: true },
            "check" => command = Command::Check,
            "run" => {}
            "-c" | "--config" => match args.next() {
                Some(path) => config_path = Some(path.into()),
                None => return usage_error("--config needs a file"),
            },
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("switchyard {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let config = match (&command, &config_path) {
        (Command::Check, None) => return usage_error("check needs --config FILE"),
        (_, Some(path)) => Config::load(path),
        (_, None) => Ok(Config::embedded()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchyard: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Check => {
            println!("configuration ok");
            ExitCode::SUCCESS
        }
        Command::Run { demo } => run(config, demo),
    }
}

fn run(config: Config, demo: bool) -> ExitCode {
    init_logging(&config);
    raise_fd_limit();
    // One worker: a current-thread runtime does the same work without cross-thread wake-ups.
    let runtime = match config.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    let result = runtime.block_on(switchyard::run(config, demo));
    // Tasks still parked (idle accept loops, the source) are dropped, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every listener and proxied connection is a descriptor or two: take the hard limit, not the
/// (often 1024) soft one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                limit = wanted;
            }
        }
    }
    tracing::debug!(nofile = limit.rlim_cur, "file descriptor limit");
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("switchyard: {message}\n\n{USAGE}");
    ExitCode::from(2)
}
