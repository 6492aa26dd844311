//! `switchyard --version`: the crate version and, when built from a git checkout with `git` on
//! PATH, the commit (`0.1.0 (abc1234)`). `SWITCHYARD_GIT_REVISION` overrides it (a build from a
//! source tarball); without either the version alone. Never fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_GIT_REVISION");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let revision = std::env::var("SWITCHYARD_GIT_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_revision);
    let full = match revision {
        Some(revision) => format!("{version} ({})", revision.trim()),
        None => version,
    };
    println!("cargo:rustc-env=SWITCHYARD_VERSION={full}");
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()))
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

/// The short commit, and the files that move with it watched (HEAD for a checkout, the branch's
/// ref for a commit, packed-refs), each only if it exists: a missing one would rerun this script
/// on every build.
fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "--short", "HEAD"])?;
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(reference) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
        watched.push(reference);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = manifest_dir().join(Path::new(&path));
            if path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(revision)
}
