//! The file source: a JSON file in Marathon's `/v2/apps?embed=apps.tasks` shape, polled for
//! changes (modification time, size and inode) and re-read whole when it changes.
//!
//! A file that does not parse keeps the last good state; apps that do not parse are skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};

use super::{Rejections, SourceEvent};
use crate::cluster::ClusterUpdate;
use crate::discovery::marathon::api;
use crate::metrics::Metrics;

#[derive(PartialEq, Eq, Clone, Copy)]
struct Signature {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

pub struct FileSource {
    pub path: PathBuf,
    pub interval: Duration,
    pub max_bytes: usize,
    pub events: mpsc::Sender<SourceEvent>,
    pub resync: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl FileSource {
    pub async fn run(self) {
        super::zero_metrics(&self.metrics);
        let mut last: Option<Signature> = None;
        let mut last_error: Option<String> = None;
        let mut rejections = Rejections::default();
        loop {
            match self.read_if_changed(&mut last).await {
                Ok(None) => {}
                Ok(Some(parsed)) => {
                    last_error = None;
                    rejections.report_all(&parsed.rejected, "app", &self.metrics);
                    // Connected before the read it took (`SourceEvent::Connected`).
                    if self
                        .events
                        .send(SourceEvent::Connected(true))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let update = SourceEvent::Update(ClusterUpdate::Snapshot(parsed.apps));
                    if self.events.send(update).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::error!(file = %self.path.display(), "keeping the last good state: {e}");
                        self.metrics.reject("file");
                        let failed = SourceEvent::Failed {
                            source: format!("file {}", self.path.display()),
                            error: e.clone(),
                        };
                        let _ = self.events.send(failed).await;
                        let _ = self.events.send(SourceEvent::Connected(false)).await;
                    }
                    last_error = Some(e);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.resync.notified() => last = None,
            }
        }
    }

    async fn read_if_changed(
        &self,
        last: &mut Option<Signature>,
    ) -> Result<Option<api::ParsedApps>, String> {
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| format!("cannot stat: {e}"))?;
        use std::os::unix::fs::MetadataExt;
        let signature = Signature {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        };
        if *last == Some(signature) {
            return Ok(None);
        }
        *last = Some(signature);
        if meta.len() as usize > self.max_bytes {
            return Err(format!("file larger than {} bytes", self.max_bytes));
        }
        let body = tokio::fs::read(&self.path)
            .await
            .map_err(|e| format!("cannot read: {e}"))?;
        let mut parsed = api::parse_apps(&body)?;
        // Apps without Marathon's `version` changed when the file did: the DNS serial follows.
        let modified_ms = signature
            .modified
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        for app in parsed.apps.iter_mut().filter(|a| a.version_ms == 0) {
            app.version_ms = modified_ms;
        }
        Ok(Some(parsed))
    }
}
