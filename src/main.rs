//! The `switchyard` command: parse arguments (the model: `switchyard::cli::args`), load the
//! configuration, run or ask a running instance.

use std::path::Path;
use std::process::ExitCode;

use switchyard::config::{Config, LogFormat};

use clap::FromArgMatches;
use clap::error::ErrorKind;
use switchyard::cli::args::{AdminArgs, Cli, Command, RunArgs};

/// The allocator: mimalloc. A proxied HTTP/2 request allocates about ten times; glibc's malloc
/// and free were a tenth of its user-space instructions, mimalloc's thread-local free lists
/// take 6 % fewer in all (callgrind, benches/RESULTS.md "Session 19").
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

/// mimalloc as the global allocator, asked for a plain block whenever any of its blocks has the
/// alignment wanted, as the standard library's own allocator decides. The `mimalloc` crate asks
/// for every block by `mi_malloc_aligned`, whose refill path (taken when a size's free list is
/// used up, which a request's allocations freed at its end make every time) costs about 180
/// instructions against `mi_malloc`'s 60: twice per proxied HTTP/2 request.
mod allocator {
    use std::alloc::{GlobalAlloc, Layout};

    use libmimalloc_sys::{
        mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
        mi_zalloc_aligned,
    };

    /// What every mimalloc block of at least this size is aligned to (`MI_MAX_ALIGN_SIZE`,
    /// `sizeof(max_align_t)`: its blocks of 16 bytes or more are rounded to and placed at
    /// multiples of it; blocks of 1 to 8 bytes are 8-aligned). So a block of `size` bytes is
    /// aligned to any power of two up to 16 and up to `size`.
    const MIN_ALIGN: usize = 16;

    /// Whether a plain block of `size` bytes is aligned to `align`.
    fn plain(align: usize, size: usize) -> bool {
        align <= MIN_ALIGN && align <= size
    }

    pub struct MiMalloc;

    // SAFETY: each function hands mimalloc the size (and, unless a plain block is aligned
    // enough, the alignment) of the layout, and `mi_free` frees a block of either kind.
    unsafe impl GlobalAlloc for MiMalloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: plain calls into the allocator with the layout's size and alignment.
            unsafe {
                if plain(layout.align(), layout.size()) {
                    mi_malloc(layout.size()).cast()
                } else {
                    mi_malloc_aligned(layout.size(), layout.align()).cast()
                }
            }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as `alloc`.
            unsafe {
                if plain(layout.align(), layout.size()) {
                    mi_zalloc(layout.size()).cast()
                } else {
                    mi_zalloc_aligned(layout.size(), layout.align()).cast()
                }
            }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` is a block this allocator gave (the trait's contract).
            unsafe { mi_free(ptr.cast()) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `ptr` is a block this allocator gave; the new block keeps its alignment.
            unsafe {
                if plain(layout.align(), new_size) {
                    mi_realloc(ptr.cast(), new_size).cast()
                } else {
                    mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
                }
            }
        }
    }
}

/// The allocator's settings, made before anything else runs: before `main`, as the program's
/// first constructor work (the runtime allocates before `main` is called, and mimalloc reads
/// an option when it reserves an arena, at the first allocation). ELF's constructors: Linux.
#[cfg(target_os = "linux")]
mod memory {
    /// mimalloc's `arena_eager_commit`: its option 4 in versions 2 and 3 alike (`mi_option_e`
    /// in `mimalloc.h` of the version Cargo.lock holds; the crate names no constant for it).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

    /// Commits the allocator's arenas as they are used, not whole when reserved: committed
    /// eagerly (mimalloc's default on Linux), an idle instance holds 22 MiB of RSS instead of
    /// 12 MiB, and 10,000 idle proxied connections 0.9 KiB each instead of 0.4 KiB (an agent
    /// runs on every node of a cluster: its idle footprint counts).
    /// A default only: `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still decides.
    extern "C" fn settle() {
        // SAFETY: sets the default of one of mimalloc's options by its index (a static
        // array); no memory is allocated or touched.
        unsafe { libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0) };
    }

    // SAFETY: `settle` only sets an option; it needs nothing of the Rust runtime.
    #[used]
    #[unsafe(link_section = ".init_array")]
    static SETTLE: extern "C" fn() = settle;
}

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's own), --help and --version 0.
    let matches = switchyard::cli::args::command().get_matches();
    let name = matches.subcommand_name().map(str::to_string);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let usage_error = |kind, message: &str| usage_error(name.as_deref(), kind, message);
    let command = cli.command.unwrap_or(Command::Run(RunArgs::default()));
    // Flags given before the command (as the old parser took them anywhere) count as given
    // after it; those the command has no use for are refused.
    let legacy_admin = AdminArgs {
        admin: cli.admin,
        token_file: cli.token_file.clone(),
        config: cli.config.clone(),
    };
    let admin = |own: AdminArgs| AdminArgs {
        admin: own.admin.or(legacy_admin.admin),
        token_file: own.token_file.or(legacy_admin.token_file.clone()),
        config: own.config.or(legacy_admin.config.clone()),
    };
    let demo = matches!(command, Command::Demo(_));
    let runs = matches!(command, Command::Run(_) | Command::Demo(_));
    let json_ok = matches!(
        command,
        Command::Routes { .. }
            | Command::Resolve { .. }
            | Command::Explain { .. }
            | Command::Plan { .. }
    );
    let admin_ok = matches!(
        command,
        Command::Routes { .. }
            | Command::Status { .. }
            | Command::Resolve { .. }
            | Command::Explain { .. }
            | Command::Reload { .. }
            | Command::Plan { .. }
            | Command::Rollout { .. }
    );
    let misplaced = [
        ("--upgrade", cli.upgrade && !runs),
        ("--json", cli.json && !json_ok),
        ("--admin", cli.admin.is_some() && !admin_ok),
        ("--token-file", cli.token_file.is_some() && !admin_ok),
        (
            "--config",
            cli.config.is_some() && !(runs || admin_ok || matches!(command, Command::Check(_))),
        ),
    ];
    if let Some((flag, _)) = misplaced.iter().find(|(_, wrong)| *wrong) {
        usage_error(
            ErrorKind::ArgumentConflict,
            &format!("{flag} does not apply to this command"),
        );
    }
    match command {
        Command::Run(own) | Command::Demo(own) => {
            let config_path = own.config.or(cli.config);
            let mut config = match &config_path {
                Some(path) => match Config::load(path) {
                    Ok(config) => config,
                    Err(e) => return invalid_config(&e),
                },
                None => Config::embedded(),
            };
            if demo && config_path.is_none() {
                demo_token(&mut config);
            }
            run(
                config,
                switchyard::RunOptions {
                    demo,
                    upgrade: own.upgrade || cli.upgrade,
                    config_path,
                },
            )
        }
        Command::Check(own) => match own.config.or(cli.config) {
            Some(path) => check(&path),
            None => usage_error(
                ErrorKind::MissingRequiredArgument,
                "check needs --config FILE",
            ),
        },
        Command::Routes { admin: own, json } => inspect("routes", admin(own), |a| {
            switchyard::cli::routes(a, json || cli.json)
        }),
        Command::Status { admin: own } => inspect("status", admin(own), switchyard::cli::status),
        Command::Resolve {
            name,
            admin: own,
            json,
        } => inspect("resolve", admin(own), |a| {
            switchyard::cli::resolve(a, &name, json || cli.json)
        }),
        Command::Explain {
            target,
            path,
            admin: own,
            json,
        } => {
            let args: Vec<String> = std::iter::once(target).chain(path).collect();
            inspect("explain", admin(own), |a| {
                switchyard::cli::explain(a, &args, json || cli.json)
            })
        }
        Command::Reload { admin: own } => inspect("reload", admin(own), switchyard::cli::reload),
        Command::Plan {
            files,
            admin: own,
            json,
        } => {
            let broken = std::cell::Cell::new(false);
            let code = inspect("plan", admin(own), |a| {
                let (out, b) = switchyard::cli::plan(a, &files, json || cli.json)?;
                broken.set(b);
                Ok(out)
            });
            // 3: the plan ran and the change would break something.
            if broken.get() {
                ExitCode::from(3)
            } else {
                code
            }
        }
        Command::Rollout { action } => {
            let failed = std::cell::Cell::new(false);
            let code = inspect("rollout", admin(action.admin().clone()), |a| {
                let (out, f) = switchyard::cli::rollout(a, &action)?;
                failed.set(f);
                Ok(out)
            });
            // 4: the rollout failed, was aborted or refused.
            if failed.get() {
                ExitCode::from(4)
            } else {
                code
            }
        }
        Command::Completions { shell } => {
            // Generated whole, then written: a reader that stops early (`| grep -q`) is no error.
            let mut script = Vec::new();
            switchyard::cli::args::completions(shell, &mut script);
            use std::io::Write;
            let _ = std::io::stdout().write_all(&script);
            ExitCode::SUCCESS
        }
        Command::Man { command, out_dir } => man(command.as_deref(), out_dir.as_deref()),
    }
}

/// `check`: exit 2 when the file is not a valid configuration, 1 when a file it names is missing
/// or unusable (as `run` would fail reading it), 0 when all is well.
fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return invalid_config(&e),
    };
    let missing = config.check_files();
    if missing.is_empty() {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    for problem in &missing {
        eprintln!("switchyard: {}: {problem}", path.display());
    }
    ExitCode::FAILURE
}

fn invalid_config(e: &str) -> ExitCode {
    eprintln!("switchyard: invalid configuration: {e}");
    ExitCode::from(2)
}

/// The admin commands: the address and token from the flags, else from `--config`'s `[admin]`.
/// An invalid `--config` is exit 2; the API unreachable or refusing, exit 1.
fn inspect(
    verb: &str,
    flags: AdminArgs,
    call: impl FnOnce(&switchyard::cli::Admin) -> Result<String, String>,
) -> ExitCode {
    let config = match flags.config.as_deref().map(Config::load).transpose() {
        Ok(config) => config,
        Err(e) => return invalid_config(&e),
    };
    let addr = flags
        .admin
        .or(config.as_ref().map(|c| c.admin.listen))
        .unwrap_or_else(|| "127.0.0.1:9090".parse().unwrap());
    let token_file = flags
        .token_file
        .or_else(|| config.and_then(|c| c.admin.token_file));
    let token = match token_file.map(|f| std::fs::read_to_string(&f).map_err(|e| (f, e))) {
        None => None,
        Some(Ok(token)) => Some(token.trim().to_string()),
        Some(Err((file, e))) => {
            eprintln!("switchyard {verb}: token file {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match call(&switchyard::cli::Admin { addr, token }) {
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

/// `switchyard man [COMMAND] [--out-dir DIR]`.
fn man(command: Option<&str>, out_dir: Option<&Path>) -> ExitCode {
    if let Some(dir) = out_dir {
        return match switchyard::cli::args::write_man_pages(dir) {
            Ok(files) => {
                for file in files {
                    println!("{}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard man: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match switchyard::cli::args::man_page(command) {
        Ok(page) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&page);
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(Some("man"), ErrorKind::InvalidValue, &e),
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

/// A usage error in clap's format (the usage line, `--help` pointed to), exit 2.
/// `command`: the subcommand whose usage to show.
fn usage_error(command: Option<&str>, kind: ErrorKind, message: &str) -> ! {
    let mut root = switchyard::cli::args::command();
    match command.and_then(|name| root.find_subcommand_mut(name)) {
        Some(sub) => sub.error(kind, message).exit(),
        None => root.error(kind, message).exit(),
    }
}
