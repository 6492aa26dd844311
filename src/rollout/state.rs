//! A rollout's record on disk, `rollout.state_dir/rollouts.json`: what a restart resumes from.
//! Written whole or not at all on every change of state or step; read once at start, and
//! checked again then (a plan is parsed anew, a step must be in the plan, the state — not the
//! number beside it — decides the canary's share).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Origin, Rollout, State};
use crate::cluster::AppId;
use crate::routing::rollout::Plan;

/// What `rollouts.json` holds of a rollout.
#[derive(Serialize, Deserialize)]
struct Recorded {
    state: State,
    origin: Origin,
    canary: AppId,
    baseline: AppId,
    step: usize,
    share: u32,
    /// As [`Plan::parse`] reads it (checked again on load).
    plan: serde_json::Value,
    started_unix_ms: u64,
    step_started_unix_ms: u64,
    finished_unix_ms: Option<u64>,
    reason: Option<String>,
    label_key: Option<String>,
    #[serde(default)]
    released: bool,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    rollouts: BTreeMap<String, Recorded>,
}

/// Writes the rollouts of `book` to `path` (refused label plans are not state: they are seen
/// again).
pub(super) fn save(path: &std::path::Path, book: &BTreeMap<String, Rollout>) {
    let file = StateFile {
        version: 1,
        rollouts: book
            .iter()
            .filter(|(_, r)| r.state != State::Refused)
            .filter_map(|(route, r)| {
                Some((
                    route.clone(),
                    Recorded {
                        state: r.state,
                        origin: r.origin,
                        canary: r.canary.clone()?,
                        baseline: r.baseline.clone()?,
                        step: r.step,
                        share: r.share,
                        plan: r.plan.written(),
                        started_unix_ms: r.started_unix_ms,
                        step_started_unix_ms: r.step_started_unix_ms,
                        finished_unix_ms: r.finished_unix_ms,
                        reason: r.reason.clone(),
                        label_key: r.label_key.clone(),
                        released: r.released,
                    },
                ))
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&file).expect("serializes") + "\n";
    if let Err(e) = write_atomically(path, text.as_bytes()) {
        tracing::error!(path = %path.display(), "rollout state not recorded: {e}");
    }
}

/// The most a state file may hold: thousands of rollouts' records, and a bound on what a
/// file that is not one costs at start.
const MAX_STATE_BYTES: usize = 16 << 20;

/// The rollouts in a state file; none (logged) when it cannot be read: missing, not a regular
/// file (a FIFO or `/dev/zero` in its place: refused without reading), over
/// [`MAX_STATE_BYTES`], or not what [`save`] writes.
pub(super) fn load(path: &std::path::Path) -> BTreeMap<String, Rollout> {
    if std::fs::symlink_metadata(path).is_err() {
        return BTreeMap::new(); // none recorded yet
    }
    let bytes = match crate::config::read_limited(path, MAX_STATE_BYTES) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(path = %path.display(), "rollout state unreadable: {e}; nothing resumed");
            return BTreeMap::new();
        }
    };
    let file: StateFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), "rollout state unreadable: {e}; nothing resumed");
            return BTreeMap::new();
        }
    };
    let mut book = BTreeMap::new();
    for (route, rec) in file.rollouts {
        let plan = match Plan::parse(&rec.plan.to_string()) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!(route, "recorded rollout plan refused: {e}; not resumed");
                continue;
            }
        };
        if rec.step == 0 || rec.step > plan.steps.len() {
            tracing::error!(
                route,
                step = rec.step,
                "recorded rollout step out of range; not resumed"
            );
            continue;
        }
        if rec.canary == rec.baseline {
            tracing::error!(
                route,
                "recorded rollout's canary is its baseline; not resumed"
            );
            continue;
        }
        // The state decides the share, not the number beside it: a failed or aborted canary
        // is at 0 whatever the file says, and a rollout running at its last step has ended.
        let mut state = rec.state;
        if state == State::Running && rec.step == plan.steps.len() {
            state = State::Succeeded;
        }
        let share = match state {
            State::Failed | State::Aborted | State::Refused => 0,
            State::Running | State::Succeeded => plan.steps[rec.step - 1],
        };
        if state == State::Running {
            tracing::info!(
                route,
                step = rec.step,
                "rollout resumed from the recorded step"
            );
        }
        book.insert(
            route.clone(),
            Rollout {
                route,
                state,
                origin: rec.origin,
                canary: Some(rec.canary),
                baseline: Some(rec.baseline),
                step: rec.step,
                steps: plan.steps.len(),
                share,
                plan,
                started_unix_ms: rec.started_unix_ms,
                step_started_unix_ms: rec.step_started_unix_ms,
                finished_unix_ms: rec.finished_unix_ms,
                last_verdict: None,
                reason: rec.reason,
                released: rec.released,
                label_key: rec.label_key,
                window: None,
                measured_since_unix_ms: 0,
            },
        );
    }
    book
}

/// Who beyond the owner may write a directory (`None`: nobody). A sticky world-writable
/// directory (`/tmp`) still lets others create files, whose names could be ours: refused too.
fn writable_by_others(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        Some("everyone")
    } else if mode & 0o020 != 0 {
        Some("its group")
    } else {
        None
    }
}

/// The lock file beside `rollouts.json`: held (an advisory `flock`) by the instance that uses
/// the directory, for as long as it runs.
pub(super) const LOCK_FILE: &str = "rollouts.lock";

/// How taking a state directory's lock went.
pub(super) enum Lock {
    Held(std::fs::File),
    /// Another process holds it.
    Busy(String),
}

/// Takes `dir`'s lock without waiting; `Err` when it cannot even be tried (a directory that
/// cannot be created, a file that cannot be opened).
pub(super) fn lock(dir: &std::path::Path) -> Result<Lock, String> {
    let path = dir.join(LOCK_FILE);
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("rollout.state_dir {}: {e}", dir.display()))?;
    // What the directory holds decides traffic at the next start (a failed canary's 0 %):
    // whoever may write it must be whoever runs switchyard.
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("rollout.state_dir {}: {e}", dir.display()))?;
    if let Some(why) = writable_by_others(&meta) {
        return Err(format!(
            "rollout.state_dir {} is writable by {why}: refused (what it records moves traffic \
             at the next start; chmod go-w it)",
            dir.display()
        ));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("rollout.state_dir {}: {e}", path.display()))?;
    // `flock(LOCK_EX | LOCK_NB)` (`File::try_lock` is newer than the supported Rust): the
    // lock belongs to this open file, and goes when the process does.
    let locked = {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain call on a file descriptor this function owns for its duration.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match locked {
        Ok(()) => Ok(Lock::Held(file)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Lock::Busy(format!(
            "rollout.state_dir {} is in use by another switchyard process (it holds {}): \
             instances must not share a state_dir — give each its own",
            dir.display(),
            path.display()
        ))),
        Err(e) => Err(format!("rollout.state_dir {}: {e}", path.display())),
    }
}

/// A temporary file's name beside `path`, its own to this process and this write (the pid and
/// a random number): two processes writing the same state file never write into one
/// temporary file.
fn temporary(path: &std::path::Path) -> std::path::PathBuf {
    use std::hash::{BuildHasher, Hasher};
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        h.finish()
    ))
}

/// Writes a file whole or not at all: a temporary file beside it (its name unique to the
/// write), flushed, renamed over it.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temporary(path);
    let written = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent() {
        // The rename itself survives a crash once the directory is flushed.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod load_tests {
    use super::*;

    #[test]
    fn temporary_names_are_each_writes_own_and_the_lock_is_one_processes() {
        let path = std::path::Path::new("/var/lib/switchyard/rollouts.json");
        let (a, b) = (temporary(path), temporary(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        let pid = format!(".{}.", std::process::id());
        assert!(a.to_string_lossy().contains(&pid), "{}", a.display());
        let dir =
            std::env::temp_dir().join(format!("switchyard-rollout-lock-{}", std::process::id()));
        let held = lock(&dir).unwrap();
        assert!(matches!(held, Lock::Held(_)));
        // A second holder (another open file, as another process would have) is refused.
        let Lock::Busy(why) = lock(&dir).unwrap() else {
            panic!("the lock was taken twice");
        };
        assert!(
            why.contains("in use by another switchyard process"),
            "{why}"
        );
        drop(held);
        assert!(matches!(lock(&dir).unwrap(), Lock::Held(_)));
        // A write leaves no temporary file behind.
        save(&dir.join("rollouts.json"), &BTreeMap::new());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(left.iter().all(|n| !n.ends_with(".tmp")), "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn record(state: &str, step: usize, share: u32, canary: &str) -> String {
        format!(
            r#"{{"version": 1, "rollouts": {{"shop": {{"state": "{state}", "origin": "api",
              "canary": "{canary}", "baseline": "/shop-blue", "step": {step}, "share": {share},
              "plan": {{"steps": [10, 50, 100], "hold": "1ms", "min_requests": 5}},
              "started_unix_ms": 1, "step_started_unix_ms": 1, "finished_unix_ms": null,
              "reason": null, "label_key": null}}}}}}"#
        )
    }

    fn loaded(text: &str) -> BTreeMap<String, Rollout> {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-rollout-load-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rollouts.json");
        std::fs::write(&path, text).unwrap();
        let book = load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        book
    }

    #[test]
    fn a_recorded_share_is_not_trusted_and_a_last_step_running_has_ended() {
        // A failed canary is at 0 whatever the file says.
        let book = loaded(&record("failed", 2, 70, "/shop-green"));
        assert_eq!((book["shop"].state, book["shop"].share), (State::Failed, 0));
        // A running rollout's share is its step's.
        let book = loaded(&record("running", 2, 70, "/shop-green"));
        assert_eq!(
            (book["shop"].state, book["shop"].share),
            (State::Running, 50)
        );
        // Running at the last step: it has ended (a pass there would step past the plan).
        let book = loaded(&record("running", 3, 50, "/shop-green"));
        assert_eq!(
            (book["shop"].state, book["shop"].share),
            (State::Succeeded, 100)
        );
        // A canary that is its own baseline is not resumed.
        assert!(loaded(&record("running", 1, 10, "/shop-blue")).is_empty());
    }
}
