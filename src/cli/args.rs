//! The command line's model (clap): every subcommand, its flags, help and examples. The
//! completions (`switchyard completions SHELL`) and the man pages (`switchyard man`) are
//! generated from it, so they cannot drift from what the parser accepts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `0.1.0 (abc1234)`: the crate version and the git commit it was built from (build.rs).
pub const VERSION: &str = env!("SWITCHYARD_VERSION");

/// Exit codes, shown under `switchyard --help` and in the man page.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  runtime failure: the admin API unreachable or refusing, a file the configuration names
     missing or unusable (`check`), a name with no record (`resolve`), the proxy failing
  2  usage error (an unknown command or flag, a missing argument) or an invalid configuration
  3  `plan`: the change would break something (a service no longer served, a port out of
     service, backends lost, a new conflict or refused label, a definition refused)
  4  `rollout status`: the rollout failed, was aborted or refused";

const ROOT_EXAMPLES: &str = "\
Examples:
  switchyard demo                                        # try it: demo apps on loopback
  switchyard check --config /etc/switchyard/switchyard.toml
  switchyard --config /etc/switchyard/switchyard.toml    # run (same as `run --config FILE`)
  switchyard routes --json
  switchyard completions bash > /etc/bash_completion.d/switchyard";

/// Service-discovery load balancer for Marathon/Mesos: edge proxy, VIPs and DNS in one process
///
/// Without a command, switchyard runs (as `switchyard run`). The commands routes, status,
/// resolve, explain, reload, plan and rollout ask a running instance through its admin API: --admin ADDR, else
/// the admin.listen of --config FILE, else 127.0.0.1:9090; --token-file FILE (else --config's
/// admin.token_file) when the API needs a bearer token.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    bin_name = "switchyard",
    version = VERSION,
    propagate_version = true,
    after_help = format!("{EXIT_CODES}\n\n{ROOT_EXAMPLES}"),
)]
pub struct Cli {
    /// The configuration file (TOML) to run with; without it, the embedded default
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// As `run --upgrade` (kept: `switchyard --config FILE --upgrade`)
    #[arg(long, hide = true)]
    pub upgrade: bool,

    /// Before the command, as after it (kept: `switchyard --admin ADDR status`)
    #[arg(long, hide = true, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Before the command, as after it (kept: `switchyard --token-file FILE status`)
    #[arg(long, hide = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Before the command, as after it (kept: `switchyard --json routes`)
    #[arg(long, hide = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the load balancer (the default when no command is given)
    #[command(after_help = "\
Examples:
  switchyard run --config /etc/switchyard/switchyard.toml
  switchyard --config /etc/switchyard/switchyard.toml          # the same
  switchyard run --upgrade --config /etc/switchyard/switchyard.toml
      # take the listening sockets over from the running process (runtime.upgrade_socket),
      # which then drains and exits

Exit codes: 0 stopped cleanly; 1 failed at runtime (a listener could not bind, ...);
2 usage error or invalid configuration.")]
    Run(RunArgs),

    /// Run, and start demo backends for the loopback tasks in the apps file
    ///
    /// Without --config: the embedded default (apps from ./config/apps.json); an admin token
    /// is written to config/demo-admin-token so that changes (weights) can be tried.
    #[command(after_help = "\
Examples:
  switchyard demo                                  # from the repository's root
  switchyard demo --config config/switchyard.toml
  curl -H 'Host: web.localhost' http://127.0.0.1:10080/")]
    Demo(RunArgs),

    /// Validate a configuration file and every file it names
    ///
    /// Parses the file as `run` would, then checks every file and directory it names (apps
    /// file, token files, certificates, the upgrade socket's directory) is there and usable.
    #[command(after_help = "\
Examples:
  switchyard check --config /etc/switchyard/switchyard.toml
  switchyard check --config switchyard-edge.toml && exec switchyard --config switchyard-edge.toml

Exit codes: 0 valid; 1 a file it names is missing or unusable (each named with its key);
2 invalid configuration (the key named) or no --config.")]
    Check(CheckArgs),

    /// The live routing table of a running instance: routes, their apps, weights, backends
    #[command(after_help = "\
Examples:
  switchyard routes
  switchyard routes --json | jq '.routes[].name'
  switchyard routes --admin 10.0.0.5:9090 --token-file /etc/switchyard/admin-token")]
    Routes {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON (/v1/routes) instead of the table
        #[arg(long)]
        json: bool,
    },

    /// A running instance's sources, last sync, generation, readiness and problems
    #[command(after_help = "\
Examples:
  switchyard status
  switchyard status --config /etc/switchyard/switchyard.toml   # its admin.listen and token")]
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },

    /// What a running instance's DNS answers for NAME (A/AAAA and SRV records)
    #[command(after_help = "\
Examples:
  switchyard resolve web-demo.marathon.mesos
  switchyard resolve _web-demo._tcp.marathon.mesos
  switchyard resolve no-such-app.marathon.mesos || echo \"exit $?\"   # exit 1: no record

Exit codes: 0 records found; 1 no record (NXDOMAIN, or a name outside the served zones) or the
admin API unreachable.")]
    Resolve {
        /// The name to resolve (`app.marathon.mesos`, `_app._tcp.marathon.mesos`, ...)
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON (hosts and services) instead of the table
        #[arg(long)]
        json: bool,
    },

    /// Which route, apps and backends a request (HOST [PATH]) or connection (PORT) would take
    #[command(after_help = "\
Examples:
  switchyard explain web.localhost /
  switchyard explain api.example.com:80 /v1/users
  switchyard explain 10081                         # a service port or VIP port")]
    Explain {
        /// A Host (with its port when not 80) or a service port
        #[arg(value_name = "HOST|PORT")]
        target: String,
        /// The request's path (HOST only) [default: /]
        path: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON (/v1/explain) instead of the summary
        #[arg(long)]
        json: bool,
    },

    /// Make a running instance re-read its configuration file (as SIGHUP does)
    ///
    /// Needs the admin token. An invalid file is refused (the key named, exit 1) and the
    /// running configuration stays; changes only a restart or upgrade applies are listed.
    #[command(after_help = "\
Examples:
  switchyard reload --config /etc/switchyard/switchyard.toml
  switchyard reload --admin 127.0.0.1:9090 --token-file config/demo-admin-token")]
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },

    /// What deploying app definitions would change on a running instance (a dry run)
    ///
    /// Compiles the instance's live cluster plus the given Marathon app definitions (an app
    /// with an existing id replaces it, keeping its tasks when the definition has none) and
    /// prints the differences: services, service ports and VIP addresses, routes and weights,
    /// vhosts, DNS names, problems (conflicts, labels ignored or refused). Nothing is applied.
    #[command(after_help = "\
Examples:
  switchyard plan web.json                         # one app, as given to Marathon
  switchyard plan web.json api.json --json | jq '.breaking'
  switchyard plan apps.json && marathon deploy ... # in CI: stop on a breaking change

Exit codes: 0 nothing would break; 3 the change would break something (a service no longer
served, a port out of service, backends lost, a new conflict or refused label, a definition
refused); 1 a file unreadable or the admin API unreachable or refusing.")]
    Plan {
        /// Marathon app definitions: one app, `{\"app\": …}`, `{\"apps\": […]}` or an array
        #[arg(value_name = "APP.json", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON (/v1/plan) instead of the summary
        #[arg(long)]
        json: bool,
    },

    /// Canary rollouts on a running instance: start a plan, watch it, abort it
    ///
    /// A plan moves the canary's share of ROUTE step by step (--steps, in percent), holding
    /// each step (--hold) until the canary's gates pass against the baseline (--max-5xx-rate,
    /// --max-p99-ratio, over at least --min-requests responses each); a failed gate sets the
    /// canary's weight to 0 at once. docs/rollouts.md has the whole story.
    #[command(after_help = "\
Examples:
  switchyard rollout start shop --steps 1,5,25,50,100 --hold 5m --max-5xx-rate 0.01
  switchyard rollout start shop --plan rollout.json      # the plan as PUT /v1/routes/{route}/rollout takes it
  switchyard rollout status shop --wait --timeout 1h     # in CI: until it succeeds (0) or fails (4)
  switchyard rollout abort shop                          # the canary's weight to 0

Exit codes: 0 started / running or succeeded / aborted; 4 (status) the rollout failed, was
aborted or refused; 1 the admin API unreachable or refusing (a plan refused, with why; no such
route; a rollout already running), or --wait timed out; 2 usage error.")]
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },

    /// Print a shell completion script (bash, zsh or fish) on stdout
    #[command(after_help = "\
Examples:
  switchyard completions bash > /etc/bash_completion.d/switchyard
  switchyard completions zsh > \"${fpath[1]}/_switchyard\"
  switchyard completions fish > ~/.config/fish/completions/switchyard.fish
  source <(switchyard completions bash)            # this shell only")]
    Completions {
        /// The shell
        shell: Shell,
    },

    /// Print the man page (roff) on stdout, or write every page to a directory
    #[command(after_help = "\
Examples:
  switchyard man | man -l -
  switchyard man routes | man -l -
  switchyard man --out-dir /usr/share/man/man1     # switchyard.1, switchyard-routes.1, ...")]
    Man {
        /// A command's own page (switchyard-COMMAND(1)) instead of switchyard(1)
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
        /// Write switchyard.1 and a page per command into DIR instead
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        out_dir: Option<PathBuf>,
    },
}

/// `rollout start|status|abort`.
#[derive(Debug, Subcommand)]
pub enum RolloutAction {
    /// Start a rollout plan on ROUTE (flags, or --plan FILE)
    Start {
        /// The route (`switchyard routes` names them: a deployment group, a vhost, a port)
        route: String,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show ROUTE's rollout: state, step, share, the last verdict with its numbers
    Status {
        route: String,
        /// Poll until the rollout is no longer running
        #[arg(long)]
        wait: bool,
        /// With --wait: give up (exit 1) after this long (`30s`, `10m`, `1h`)
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "30m",
            requires = "wait"
        )]
        timeout: String,
        /// Print the admin API's JSON instead of the summary
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Abort ROUTE's rollout: the canary's weight goes to 0
    Abort {
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

impl RolloutAction {
    pub fn admin(&self) -> &AdminArgs {
        match self {
            RolloutAction::Start { admin, .. }
            | RolloutAction::Status { admin, .. }
            | RolloutAction::Abort { admin, .. } => admin,
        }
    }
}

/// A rollout plan as flags (the instance checks it: a plan it refuses is exit 1, with why).
#[derive(Debug, Default, Clone, Args)]
pub struct PlanArgs {
    /// The plan as a JSON file (`{"steps": [...], "hold": "5m", ...}`), instead of the flags
    #[arg(long, value_name = "FILE", conflicts_with_all = ["steps", "hold", "max_5xx_rate", "max_p99_ratio", "p99_floor_ms", "min_requests", "canary", "baseline"])]
    pub plan: Option<PathBuf>,
    /// The canary's share at each step, in percent, increasing, the last 100
    #[arg(
        long,
        value_name = "PERCENT,...",
        value_delimiter = ',',
        required_unless_present = "plan"
    )]
    pub steps: Vec<u32>,
    /// How long each step holds before its verdict (`30s`, `5m`)
    #[arg(long, value_name = "DURATION", required_unless_present = "plan")]
    pub hold: Option<String>,
    /// The canary fails above this fraction of 5xx responses [default: 0.01]
    #[arg(long, value_name = "FRACTION")]
    pub max_5xx_rate: Option<f64>,
    /// The canary fails when its p99 is more than this many times the baseline's [default: 1.5]
    #[arg(long, value_name = "RATIO")]
    pub max_p99_ratio: Option<f64>,
    /// The baseline's p99 counts as at least this in the ratio [default: 10]
    #[arg(long, value_name = "MS")]
    pub p99_floor_ms: Option<f64>,
    /// Responses each side needs over a step before any verdict [default: 100]
    #[arg(long, value_name = "N")]
    pub min_requests: Option<u64>,
    /// The canary app [default: the route's newest deployment]
    #[arg(long, value_name = "APP")]
    pub canary: Option<String>,
    /// The baseline app [default: the route's other app]
    #[arg(long, value_name = "APP")]
    pub baseline: Option<String>,
}

/// `run` and `demo`.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// The configuration file (TOML); without it, the embedded default
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Take the listening sockets over from the running process (runtime.upgrade_socket),
    /// which then drains and exits
    #[arg(long)]
    pub upgrade: bool,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file to check (required)
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How the admin commands reach the admin API.
#[derive(Debug, Default, Clone, Args)]
pub struct AdminArgs {
    /// The admin API's address [default: --config's admin.listen, else 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// A file holding the admin API's bearer token [default: --config's admin.token_file]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Take the admin address and token file from this configuration file
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// The clap model, built (subcommands know their full names: `switchyard routes`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut command = Cli::command();
    command.build();
    command
}

/// `switchyard completions SHELL`.
pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        "switchyard",
        out,
    );
}

/// `switchyard man [COMMAND]`: switchyard(1), or switchyard-COMMAND(1).
pub fn man_page(subcommand: Option<&str>) -> Result<Vec<u8>, String> {
    let root = command();
    let page = match subcommand {
        None => root,
        Some(name) => root
            .find_subcommand(name)
            .cloned()
            // Built: its display name (the page's title) is `switchyard-{name}`.
            .ok_or_else(|| format!("no command {name:?}"))?,
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// `switchyard man --out-dir DIR`: switchyard.1 and switchyard-COMMAND.1 for each command.
pub fn write_man_pages(dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let names: Vec<Option<String>> = std::iter::once(None)
        .chain(
            command()
                .get_subcommands()
                .filter(|c| c.get_name() != "help")
                .map(|c| Some(c.get_name().to_string())),
        )
        .collect();
    for name in names {
        let page = man_page(name.as_deref())?;
        let file = dir.join(match &name {
            None => "switchyard.1".to_string(),
            Some(name) => format!("switchyard-{name}.1"),
        });
        std::fs::write(&file, page).map_err(|e| format!("{}: {e}", file.display()))?;
        written.push(file);
    }
    Ok(written)
}
