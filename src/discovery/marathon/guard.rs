//! The removal guard: a full read of `/v2/apps` that would take away every app the source
//! knows, or more than `discovery.max_removal_fraction` of them, is not applied on its own word.
//! A Marathon leader answers `{"apps": []}` for a moment after a failover (and a relay, or a
//! proxy in front of Marathon, can do the same); applied, that empties every route, VIP and DNS
//! name at once. Such a read is held, reported, and a second full read after
//! `discovery.removal_confirm_delay` decides (`MarathonSource::snapshot`).
//!
//! An app scaled to zero is not removed (it stays in `/v2/apps` without tasks), so a deliberate
//! scale-down never meets the guard; an app deleted in Marathon is removed by its
//! `app_terminated_event` at once, without it.

use std::collections::HashSet;
use std::time::Duration;

use crate::cluster::AppId;

/// `discovery.max_removal_fraction` and `discovery.removal_confirm_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemovalGuard {
    /// A read removing more than this share of the known apps (or all of them) is held.
    pub max_fraction: f64,
    /// How long after a held read the confirming one is made; zero: no guard.
    pub confirm_delay: Duration,
}

/// A read the guard holds back: how many of the known apps it would remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub removed: usize,
    pub known: usize,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a full read of /v2/apps would remove {} of {} apps; held until a second read \
             confirms it (discovery.max_removal_fraction)",
            self.removed, self.known
        )
    }
}

impl RemovalGuard {
    /// Whether a full read of these app ids must be confirmed before it replaces `known`.
    pub fn judge<'a>(
        &self,
        known: &HashSet<AppId>,
        read: impl IntoIterator<Item = &'a AppId>,
    ) -> Option<Held> {
        if self.confirm_delay.is_zero() || known.is_empty() {
            return None;
        }
        let kept = read.into_iter().filter(|id| known.contains(*id)).count();
        let removed = known.len() - kept;
        let all = removed == known.len();
        let too_many = removed as f64 > self.max_fraction * known.len() as f64;
        (removed > 0 && (all || too_many)).then_some(Held {
            removed,
            known: known.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(ids: &[&str]) -> Vec<AppId> {
        ids.iter().map(|id| AppId::from(*id)).collect()
    }

    fn known(ids: &[&str]) -> HashSet<AppId> {
        ids.iter().map(|id| AppId::from(*id)).collect()
    }

    const GUARD: RemovalGuard = RemovalGuard {
        max_fraction: 0.5,
        confirm_delay: Duration::from_secs(5),
    };

    #[test]
    fn an_empty_answer_after_apps_is_held() {
        let held = GUARD.judge(&known(&["/a", "/b", "/c"]), &apps(&[]));
        assert_eq!(
            held,
            Some(Held {
                removed: 3,
                known: 3
            })
        );
    }

    #[test]
    fn the_only_app_going_is_held_too() {
        assert!(GUARD.judge(&known(&["/a"]), &apps(&[])).is_some());
    }

    #[test]
    fn removing_up_to_the_fraction_applies_and_more_is_held() {
        let k = known(&["/a", "/b", "/c", "/d"]);
        assert_eq!(GUARD.judge(&k, &apps(&["/a", "/b"])), None, "2 of 4 is 0.5");
        assert!(GUARD.judge(&k, &apps(&["/a"])).is_some(), "3 of 4");
        assert_eq!(GUARD.judge(&k, &apps(&["/a", "/b", "/c"])), None);
    }

    #[test]
    fn new_apps_do_not_offset_removed_ones() {
        let k = known(&["/a", "/b"]);
        assert!(GUARD.judge(&k, &apps(&["/x", "/y", "/z"])).is_some());
    }

    #[test]
    fn nothing_known_or_no_delay_holds_nothing() {
        assert_eq!(GUARD.judge(&known(&[]), &apps(&[])), None);
        let off = RemovalGuard {
            confirm_delay: Duration::ZERO,
            ..GUARD
        };
        assert_eq!(off.judge(&known(&["/a"]), &apps(&[])), None);
    }
}
