//! What a follower hears on the relay's `/v2/events`: the events that take it from one model
//! to the next (in Marathon's shapes, or one `group_change_success` when many apps changed),
//! a subscriber as the relay holds it, and the body its stream is written from. The relay
//! (`mod.rs`) registers subscribers, queues events for them and cuts the slow ones.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use super::RESYNC_ABOVE;
use crate::cluster::Cluster;
use crate::discovery::marathon::render::{self, Embed};

pub(super) struct Subscriber {
    pub(super) id: u64,
    pub(super) queue: mpsc::Sender<Bytes>,
    /// `event_type=` filters; empty: every event.
    pub(super) kinds: Vec<String>,
    /// Closes the subscriber's connection.
    pub(super) cut: Arc<Notify>,
}

/// The events that take a follower from `old` to `new`.
pub(super) fn events(old: &Cluster, new: &Cluster) -> Vec<(String, Bytes)> {
    let now = render::iso8601(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let changed: Vec<_> = new
        .apps
        .values()
        .filter(|app| old.apps.get(&app.id) != Some(app))
        .collect();
    let removed: Vec<_> = old
        .apps
        .keys()
        .filter(|id| !new.apps.contains_key(*id))
        .collect();
    let event = |value: serde_json::Value| {
        let kind = value["eventType"].as_str().unwrap_or_default().to_string();
        let bytes = Bytes::from(format!("event: {kind}\r\ndata: {value}\r\n\r\n"));
        (kind, bytes)
    };
    if changed.len() + removed.len() > RESYNC_ABOVE {
        return vec![event(json!({
            "eventType": "group_change_success",
            "groupId": "/",
            "version": now,
            "timestamp": now,
        }))];
    }
    let mut out = Vec::with_capacity(changed.len() + removed.len());
    for app in changed {
        out.push(event(json!({
            "eventType": "api_post_event",
            "timestamp": now,
            "uri": format!("/v2/apps{}", app.id),
            "appDefinition": render::app(app, Embed::default()),
        })));
    }
    for id in removed {
        out.push(event(json!({
            "eventType": "app_terminated_event",
            "appId": &**id,
            "timestamp": render::iso8601(new.newest_ms),
        })));
    }
    out
}

/// A subscriber's stream: what its queue holds, as it is written.
pub(super) struct SseBody {
    pub(super) rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
    }
}
