//! Unit tests of the relay: the events it makes from a model change, and its subscribers' queues.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::*;
use crate::cluster::{App, AppId};

fn app(id: &str, vhost: &str) -> App {
    let body = json!({"id": id, "labels": {"HAPROXY_0_VHOST": vhost},
        "portDefinitions": [{"port": 10000}]});
    crate::discovery::marathon::api::parse_single_app(body.to_string().as_bytes()).unwrap()
}

fn cluster(apps: Vec<App>) -> Arc<Cluster> {
    Arc::new(Cluster {
        apps: apps
            .into_iter()
            .map(|a| (a.id.clone(), Arc::new(a)))
            .collect(),
        ..Cluster::default()
    })
}

fn kinds(events: &[(String, Bytes)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn a_change_is_one_event_per_app_and_many_are_one_resync() {
    let old = cluster(vec![app("/a", "a"), app("/b", "b")]);
    let new = cluster(vec![app("/a", "a2"), app("/c", "c")]);
    let sent = events(&old, &new);
    assert_eq!(
        kinds(&sent),
        ["api_post_event", "api_post_event", "app_terminated_event"]
    );
    let text = String::from_utf8(sent[0].1.to_vec()).unwrap();
    assert!(text.starts_with("event: api_post_event\r\ndata: {"));
    assert!(text.contains("\"appDefinition\"") && text.contains("a2"));
    assert!(text.ends_with("\r\n\r\n"));
    assert!(events(&new, &new).is_empty());
    let many = cluster(
        (0..=RESYNC_ABOVE)
            .map(|i| app(&format!("/m{i}"), "m"))
            .collect(),
    );
    assert_eq!(kinds(&events(&old, &many)), ["group_change_success"]);
}

/// A subscriber registered before a model is published gets that model's events, and the
/// model is stored before they are sent; one whose queue is full is cut, the others are not.
#[tokio::test]
async fn events_follow_the_stored_model_and_a_full_queue_is_cut() {
    let metrics = Metrics::new();
    let relay = Relay::new(
        Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
            max_subscribers: 8,
            subscriber_queue: 1,
            max_disconnected: Duration::from_secs(60),
            max_body_bytes: 64 << 20,
            keepalive: Duration::from_secs(15),
            timeouts: Default::default(),
        },
        RelayMetrics::register(&metrics),
        Box::new(|| Source {
            reads: 1,
            connected: true,
            reads_at_loss: 0,
        }),
    );
    relay.publish(cluster(vec![app("/a", "a")]), 1);
    let (fast_tx, mut fast_rx) = mpsc::channel(4);
    let (slow_tx, _slow_rx) = mpsc::channel(1);
    let (fast_cut, slow_cut) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    for (id, queue, cut) in [
        (0, fast_tx, fast_cut.clone()),
        (1, slow_tx, slow_cut.clone()),
    ] {
        relay.subscribers.lock().unwrap().push(Subscriber {
            id,
            queue,
            kinds: Vec::new(),
            cut,
        });
    }
    relay.publish(cluster(vec![app("/a", "a2"), app("/b", "b")]), 1);
    let served = relay.state.load_full().unwrap();
    assert_eq!(served.generation, 2);
    assert!(served.cluster.apps.contains_key(&AppId::from("/b")));
    assert!(fast_rx.recv().await.is_some() && fast_rx.recv().await.is_some());
    // Two events, a queue of one: the slow subscriber is cut and dropped.
    assert_eq!(relay.subscriber_ids(), vec![0]);
    assert_eq!(relay.metrics.cut.get(), 1);
    tokio::time::timeout(Duration::from_secs(1), slow_cut.notified())
        .await
        .expect("the slow subscriber's connection is told to close");
}

fn settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        max_subscribers: 8,
        subscriber_queue: 4,
        max_disconnected: Duration::from_secs(60),
        max_body_bytes: 64 << 20,
        keepalive: Duration::from_secs(15),
        timeouts: Default::default(),
    }
}

/// A source whose state a test sets: connected or not, the full reads applied, and the count
/// at its last loss.
#[derive(Clone)]
struct FakeSource(Arc<Mutex<Source>>);

impl Default for FakeSource {
    fn default() -> Self {
        FakeSource(Arc::new(Mutex::new(Source {
            reads: 0,
            connected: false,
            reads_at_loss: 0,
        })))
    }
}

impl FakeSource {
    /// Connected or not, with `reads` applied; a loss is counted as the reconciler does.
    fn set(&self, connected: bool, reads: u64) {
        let mut source = self.0.lock().unwrap();
        if !connected {
            source.reads_at_loss = reads;
        }
        source.reads = reads;
        source.connected = connected;
    }

    /// Lost and back since it was last read, with no new read applied yet.
    fn lost_and_back(&self) {
        let mut source = self.0.lock().unwrap();
        source.reads_at_loss = source.reads;
        source.connected = true;
    }

    fn relay(&self, metrics: &Metrics) -> Arc<Relay> {
        let source = self.clone();
        Relay::new(
            settings(),
            RelayMetrics::register(metrics),
            Box::new(move || *source.0.lock().unwrap()),
        )
    }
}

/// A relay on a [`FakeSource`] that says connected, serving the model of its first read.
fn current_relay(metrics: &Metrics) -> (FakeSource, Arc<Relay>) {
    let source = FakeSource::default();
    let relay = source.relay(metrics);
    // Sources say connected before they hand over their read: the first model is current.
    source.set(true, 1);
    relay.publish(cluster(vec![app("/a", "a")]), 1);
    (source, relay)
}

/// Behind from the moment the loss is seen until a model from a full read made after it is
/// published: not when the source reports connected (its new model may not be compiled yet),
/// nor with a model swapped while still lost.
#[test]
fn behind_from_the_loss_until_a_model_read_after_it_is_served() {
    let metrics = Metrics::new();
    let (source, relay) = current_relay(&metrics);
    let t0 = std::time::Instant::now();
    assert!(relay.observe(t0));
    assert_eq!(relay.metrics.current.get(), 1);
    // Lost: behind at once, not stale yet.
    source.set(false, 1);
    assert!(!relay.observe(t0));
    assert!(!relay.stale.load(Ordering::Relaxed));
    assert_eq!(relay.metrics.current.get(), 0);
    // A swap while still lost: still behind. Connected, its new model not yet served: still.
    relay.publish(cluster(vec![app("/a", "a2")]), 1);
    assert!(!relay.observe(t0));
    source.set(true, 1);
    assert!(!relay.observe(t0));
    // The new read swapped in: current at once.
    source.set(true, 2);
    relay.publish(cluster(vec![app("/a", "a3")]), 2);
    assert!(relay.observe(t0));
    assert_eq!(relay.metrics.current.get(), 1);
}

/// A source reading as not connected while a model is served is lost at once, even just after
/// that model, holding the newest read, was published: sources say connected before they hand
/// a read over, so there is no moment to wait out (no grace a slow swap could outlast).
#[test]
fn not_connected_with_a_model_served_is_a_loss_at_once() {
    let metrics = Metrics::new();
    let source = FakeSource::default();
    let relay = source.relay(&metrics);
    let t0 = std::time::Instant::now();
    source.set(false, 1);
    relay.publish(cluster(vec![app("/a", "a")]), 1);
    assert!(!relay.observe(t0));
    assert_eq!(relay.metrics.current.get(), 0);
    // The next read, handed over once the source is back, ends it.
    source.set(true, 2);
    relay.publish(cluster(vec![app("/a", "a2")]), 2);
    assert!(relay.observe(t0));
}

/// A loss is timed from when it is seen: after a model read after an earlier loss is served, a
/// new loss starts `relay.max_disconnected` afresh (the relay does not go stale at once for the
/// time the earlier one lasted).
#[test]
fn a_recovery_resets_the_loss_clock() {
    let metrics = Metrics::new();
    let (source, relay) = current_relay(&metrics);
    let t0 = std::time::Instant::now();
    source.set(false, 1);
    assert!(!relay.observe(t0));
    // Back between two ticks: the new model is published, and that ends the loss.
    source.set(true, 2);
    relay.publish(cluster(vec![app("/a", "a2")]), 2);
    assert_eq!(relay.metrics.current.get(), 1);
    // Lost again before the next tick saw it connected, a minute later: behind, not stale.
    source.set(false, 2);
    let again = t0 + Duration::from_secs(61);
    assert!(!relay.observe(again));
    assert!(!relay.stale.load(Ordering::Relaxed));
    relay.observe(again + Duration::from_secs(61));
    assert!(relay.stale.load(Ordering::Relaxed));
}

/// Stale (lost for longer than `max_disconnected`) until a model is published once the source
/// is back: the source reports connected before its new model is compiled, and the old one must
/// not be served in between; nor does a model published while still lost end it.
#[test]
fn stale_ends_with_the_model_published_after_the_source_is_back() {
    let metrics = Metrics::new();
    let (source, relay) = current_relay(&metrics);
    source.set(false, 1);
    let lost = std::time::Instant::now();
    relay.observe(lost);
    relay.observe(lost + Duration::from_secs(61));
    assert!(relay.stale.load(Ordering::Relaxed));
    // A swap while still lost: still stale.
    relay.publish(cluster(vec![app("/a", "a2")]), 1);
    assert!(relay.stale.load(Ordering::Relaxed));
    // Connected, the new model not yet published: still stale.
    source.set(true, 2);
    relay.observe(lost + Duration::from_secs(62));
    assert!(relay.stale.load(Ordering::Relaxed));
    relay.publish(cluster(vec![app("/a", "a3")]), 2);
    assert!(!relay.stale.load(Ordering::Relaxed));
}

/// A request's read of the source can come before a model published meanwhile: it reads "not
/// connected" (taken before the reconnect), then the model of the read made after the
/// reconnect. That model is current once the source says connected: the relay does not stay
/// behind until the next full read (and go stale after `relay.max_disconnected`), as when it
/// took the model served at the moment it saw the loss for one from before it.
#[test]
fn a_model_published_after_the_source_was_read_is_judged_by_its_reads() {
    let metrics = Metrics::new();
    let (source, relay) = current_relay(&metrics);
    assert!(relay.observe(std::time::Instant::now()));
    // The loss as read, with the model of the read after the reconnect already served.
    *source.0.lock().unwrap() = Source {
        reads: 1,
        connected: false,
        reads_at_loss: 1,
    };
    relay.publish(cluster(vec![app("/a", "a2")]), 2);
    assert!(!relay.observe(std::time::Instant::now()));
    // The source as it is: connected, two reads, lost at one.
    source.set(true, 2);
    assert!(relay.observe(std::time::Instant::now()));
    assert_eq!(relay.metrics.current.get(), 1);
}

/// A loss between two ticks, never seen as "not connected": the relay is still behind until a
/// model holding a read made after it is served (the reconciler counts the loss).
#[test]
fn a_loss_too_short_for_any_tick_still_needs_a_read_after_it() {
    let metrics = Metrics::new();
    let (source, relay) = current_relay(&metrics);
    assert!(relay.observe(std::time::Instant::now()));
    source.lost_and_back();
    assert!(!relay.observe(std::time::Instant::now()));
    assert_eq!(relay.metrics.current.get(), 0);
    source.set(true, 2);
    relay.publish(cluster(vec![app("/a", "a2")]), 2);
    assert!(relay.observe(std::time::Instant::now()));
}
