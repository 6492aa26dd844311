//! Sources of cluster state. Each runs as its own task and sends [`SourceEvent`]s to the
//! reconciler; none of them touches the routing table.

pub mod auth;
pub mod file;
pub mod marathon;
pub mod mesos;

use std::collections::HashSet;

use crate::cluster::ClusterUpdate;
use crate::metrics::Metrics;

#[derive(Debug)]
pub enum SourceEvent {
    Update(ClusterUpdate),
    /// The source is (or is no longer) connected to its upstream. A source says `true` before
    /// the full read it took on that connection (`ClusterUpdate::Snapshot`), never after it: a
    /// model holding a read is then never served while the source still reads as not
    /// connected, and "not connected" with any model served is a loss (the relay's
    /// `observe` relies on it).
    Connected(bool),
    /// The source's last attempt failed: `source` names it (`file PATH`, `marathon URL`),
    /// `error` says why. Shown as a problem until the source next succeeds (`Connected(true)`).
    Failed {
        source: String,
        error: String,
    },
    /// The Mesos source's state (connection, leader, skipped records), each time it changes.
    Mesos(mesos::Report),
}

/// Every source's metric families with a zero for each kind it can count, so that
/// `/metrics` lists them from the start (a rate over a series that appears only at its
/// first event misses that event). The file source counts no events but shares the families.
pub fn zero_metrics(metrics: &Metrics) {
    for kind in marathon::api::SUBSCRIBED_EVENTS {
        let _ = metrics.events.get_or_create(&crate::metrics::KindLabels {
            kind: (*kind).to_string(),
        });
    }
}

/// Distinct rejections remembered (to report each once); past it, new ones are still counted
/// and logged (within the rate below) but not remembered.
const MAX_REMEMBERED: usize = 4096;
/// Longest id or reason kept or logged: both can come from the peer (an event's own name).
const MAX_TEXT_BYTES: usize = 256;
/// Warning lines per minute, all kinds together; past it rejections are only counted, and the
/// number left unlogged is logged, per kind, with the next line the window allows.
const LOG_PER_MINUTE: u32 = 20;

/// Reports each rejected input once (log line and metric), however often a source re-reads it.
/// Bounded whatever the peer sends: so many entries, of so many bytes, so many lines a minute.
#[derive(Default)]
pub struct Rejections {
    seen: HashSet<(String, String)>,
    window_start: Option<std::time::Instant>,
    logged_in_window: u32,
    /// Rejections counted but not logged, per kind, since the last summary.
    unlogged: Vec<(&'static str, u64)>,
}

impl Rejections {
    /// Reports the rejections of one full read; forgets those that are gone, so a problem that
    /// comes back is reported again.
    pub fn report_all(
        &mut self,
        rejected: &[(String, String)],
        kind: &'static str,
        metrics: &Metrics,
    ) {
        let mut current = HashSet::new();
        for (id, reason) in rejected {
            let key = (bounded(id), bounded(reason));
            if !self.seen.contains(&key) {
                self.warn(&key.0, &key.1, kind);
                metrics.reject(kind);
            }
            if current.len() < MAX_REMEMBERED {
                current.insert(key);
            }
        }
        self.seen = current;
    }

    /// Reports one rejection (an event or a single app) if it is new.
    pub fn report(&mut self, id: &str, reason: &str, kind: &'static str, metrics: &Metrics) {
        let key = (bounded(id), bounded(reason));
        if self.seen.contains(&key) {
            return;
        }
        self.warn(&key.0, &key.1, kind);
        metrics.reject(kind);
        if self.seen.len() < MAX_REMEMBERED {
            self.seen.insert(key);
        }
    }

    /// Forgets every rejection remembered: the next ones are reported again.
    pub fn forget(&mut self) {
        self.seen.clear();
    }

    /// Logs one rejection, or counts it as unlogged past the minute's allowance.
    fn warn(&mut self, id: &str, reason: &str, kind: &'static str) {
        let now = std::time::Instant::now();
        let window_over = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= std::time::Duration::from_secs(60));
        if window_over {
            self.window_start = Some(now);
            self.logged_in_window = 0;
            for (kind, count) in self.unlogged.drain(..) {
                tracing::warn!(
                    count,
                    "{count} more rejected {kind} inputs were not logged one by one \
                     (switchyard_rejected_inputs_total counts them)"
                );
            }
        }
        if self.logged_in_window < LOG_PER_MINUTE {
            self.logged_in_window += 1;
            tracing::warn!(app_id = %id, "rejected {kind}: {reason}");
            return;
        }
        match self.unlogged.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, count)) => *count += 1,
            None => self.unlogged.push((kind, 1)),
        }
    }
}

/// `text` cut to [`MAX_TEXT_BYTES`] (on a character boundary), marked when cut.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // Control characters escaped: a rejected input's id or reason is outside text, and a line
    // feed in it would write a log line of its own.
    let mut shown = String::with_capacity(end);
    for c in text[..end].chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if end < text.len() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(metrics: &Metrics, kind: &str) -> u64 {
        metrics
            .rejected_inputs
            .get_or_create(&crate::metrics::KindLabels {
                kind: kind.to_string(),
            })
            .get()
    }

    #[test]
    fn a_flood_of_distinct_rejections_is_counted_but_not_remembered_past_the_bound() {
        let metrics = Metrics::new();
        let mut r = Rejections::default();
        let long = "n".repeat(100_000);
        for i in 0..MAX_REMEMBERED + 500 {
            r.report(
                &format!("{i}{long}"),
                "missing eventType",
                "event",
                &metrics,
            );
        }
        assert_eq!(r.seen.len(), MAX_REMEMBERED);
        assert!(
            r.seen
                .iter()
                .all(|(id, _)| id.len() <= MAX_TEXT_BYTES + '…'.len_utf8())
        );
        assert_eq!(rejected(&metrics, "event"), (MAX_REMEMBERED + 500) as u64);
        assert_eq!(r.logged_in_window, LOG_PER_MINUTE);
        assert_eq!(
            r.unlogged,
            vec![(
                "event",
                (MAX_REMEMBERED + 500) as u64 - u64::from(LOG_PER_MINUTE)
            )]
        );
    }

    #[test]
    fn control_characters_in_rejected_text_are_escaped() {
        assert_eq!(bounded("/broken"), "/broken");
        assert_eq!(
            bounded("/a\nWARN forged\r\u{1b}[31m"),
            "/a\\nWARN forged\\r\\u{1b}[31m"
        );
        let long = format!("{}\n", "é".repeat(MAX_TEXT_BYTES));
        assert_eq!(
            bounded(&long),
            format!("{}…", "é".repeat(MAX_TEXT_BYTES / 2))
        );
    }

    #[test]
    fn a_repeat_is_reported_once_and_a_full_read_forgets_what_is_gone() {
        let metrics = Metrics::new();
        let mut r = Rejections::default();
        let bad = vec![("/a".to_string(), "no port".to_string())];
        r.report_all(&bad, "app", &metrics);
        r.report_all(&bad, "app", &metrics);
        assert_eq!(rejected(&metrics, "app"), 1);
        r.report_all(&[], "app", &metrics);
        r.report_all(&bad, "app", &metrics);
        assert_eq!(rejected(&metrics, "app"), 2, "it came back: reported again");
    }

    #[test]
    fn cutting_keeps_character_boundaries() {
        let text = "é".repeat(MAX_TEXT_BYTES);
        let cut = bounded(&text);
        assert!(cut.len() <= MAX_TEXT_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
