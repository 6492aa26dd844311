//! The `switchyard` command: parse arguments, load the configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use switchyard::config::{Config, LogFormat};

const USAGE: &str = "\
switchyard: service-discovery load balancer for Marathon/Mesos

usage:
  switchyard [--config FILE]         run (without --config: the embedded default)
  switchyard demo [--config FILE]    run, and start demo backends for loopback tasks
  switchyard run --upgrade ...       take the listening sockets over from the running process
                                     (runtime.upgrade_socket), which then drains and exits
  switchyard check --config FILE     validate a configuration file and every file it names
                                     (exit 2: invalid; 1: a named file is missing or unusable)
  switchyard routes [--json]         the live routing table of a running instance
  switchyard status                  its sources, last sync, generation, problems
  switchyard resolve NAME            what its DNS answers for NAME
  switchyard explain HOST [PATH]     which route, apps and backends a request would take
  switchyard explain PORT            ... or a connection to a service port or VIP
  switchyard reload                  re-read its configuration file (as SIGHUP does)
    (these five talk to the admin API: --admin ADDR, else --config's admin.listen, else
     127.0.0.1:9090; --token-file FILE when it needs a bearer token)
  switchyard --help | --version
";

enum Command {
    Run {
        demo: bool,
    },
    Check,
    /// `routes`, `status`, `resolve`, `explain`, with their arguments.
    Inspect(String, Vec<String>),
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut command = Command::Run { demo: false };
    let mut upgrade = false;
    let mut config_path: Option<PathBuf> = None;
    let (mut admin, mut token_file, mut json) = (None::<String>, None::<PathBuf>, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "demo" => command = Command::Run { demo: true },
            "check" => command = Command::Check,
            verb @ ("routes" | "status" | "resolve" | "explain" | "reload") => {
                command = Command::Inspect(verb.to_string(), Vec::new())
            }
            "--admin" => admin = args.next(),
            "--token-file" => token_file = args.next().map(PathBuf::from),
            "--json" => json = true,
            "--upgrade" => upgrade = true,
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
            other => match &mut command {
                Command::Inspect(_, rest) if !other.starts_with('-') => {
                    rest.push(other.to_string())
                }
                _ => return usage_error(&format!("unknown argument {other:?}")),
            },
        }
    }
    if let Command::Inspect(verb, rest) = &command {
        return inspect(verb, rest, admin, token_file, config_path, json);
    }
    let config = match (&command, &config_path) {
        (Command::Check, None) => return usage_error("check needs --config FILE"),
        (_, Some(path)) => Config::load(path),
        (_, None) => Ok(Config::embedded()),
    };
    let mut config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchyard: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Check => {
            // The configuration parses; now what it names must be there, as `run` reads it.
            let missing = config.check_files();
            if missing.is_empty() {
                println!("configuration ok");
                return ExitCode::SUCCESS;
            }
            let path = config_path.as_deref().unwrap_or(std::path::Path::new("-"));
            for problem in &missing {
                eprintln!("switchyard: {}: {problem}", path.display());
            }
            ExitCode::FAILURE
        }
        Command::Run { demo } => {
            if demo && config_path.is_none() {
                demo_token(&mut config);
            }
            run(
                config,
                switchyard::RunOptions {
                    demo,
                    upgrade,
                    config_path,
                },
            )
        }
        Command::Inspect(..) => unreachable!("handled before the configuration is loaded"),
    }
}

fn inspect(
    verb: &str,
    rest: &[String],
    admin: Option<String>,
    token_file: Option<PathBuf>,
    config_path: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let config = config_path.map(|p| Config::load(&p));
    let addr = match (admin, &config) {
        (Some(a), _) => a
            .parse()
            .map_err(|_| format!("--admin {a:?}: expected address:port")),
        (None, Some(Ok(c))) => Ok(c.admin.listen),
        (None, Some(Err(e))) => Err(e.clone()),
        (None, None) => Ok("127.0.0.1:9090".parse().unwrap()),
    };
    let token_file = token_file.or_else(|| config.and_then(|c| c.ok()?.admin.token_file));
    let token = token_file.map(|f| std::fs::read_to_string(&f).map(|t| t.trim().to_string()));
    let result = match (addr, token.transpose()) {
        (Err(e), _) => Err(e),
        (_, Err(e)) => Err(format!("token file: {e}")),
        (Ok(addr), Ok(token)) => {
            let admin = switchyard::cli::Admin { addr, token };
            match (verb, rest) {
                ("routes", []) => switchyard::cli::routes(&admin, json),
                ("status", []) => switchyard::cli::status(&admin),
                ("resolve", [name]) => switchyard::cli::resolve(&admin, name),
                ("explain", args) => switchyard::cli::explain(&admin, args),
                ("reload", []) => switchyard::cli::reload(&admin),
                _ => return usage_error(&format!("{verb}: wrong arguments {rest:?}")),
            }
        }
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard {verb}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `switchyard demo` on the embedded default: an admin token, so that the documented changes
/// (weights) can be tried, written to `config/demo-admin-token` (beside the apps file the
/// default reads; 0600) — only while the admin API listens on loopback and no token is set.
fn demo_token(config: &mut Config) {
    if config.admin.token_file.is_some() || !config.admin.listen.ip().is_loopback() {
        return;
    }
    match switchyard::demo::write_token(std::path::Path::new("config")) {
        Ok(path) => {
            println!(
                "demo: admin token in {} (curl -H \"Authorization: Bearer $(cat {})\" ...; \
                 switchyard --token-file {} ...)",
                path.display(),
                path.display(),
                path.display()
            );
            config.admin.token_file = Some(path);
        }
        Err(e) => eprintln!("switchyard demo: no admin token (changes are refused): {e}"),
    }
}

fn run(config: Config, options: switchyard::RunOptions) -> ExitCode {
    init_logging(&config);
    raise_fd_limit();
    // The first worker of the data plane; `run` starts the others (see `workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(switchyard::run(config, options));
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
