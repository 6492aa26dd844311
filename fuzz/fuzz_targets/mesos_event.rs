//! One Mesos operator API event record (JSON) into a cluster update: never panics, whatever the
//! bytes; a snapshot that parses applies to a cluster model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::cluster::mesos::Master;
use switchyard::cluster::{Cluster, ClusterUpdate};
use switchyard::discovery::mesos::api::{Event, parse_event};

fuzz_target!(|data: &[u8]| {
    let Ok((_, event)) = parse_event(data) else {
        return;
    };
    let mut cluster = Cluster::default();
    let update = match event {
        Event::Subscribed(snapshot) => {
            let leader = Master {
                host: "127.0.0.1".into(),
                port: 5050,
            };
            snapshot.into_update(leader.clone(), vec![leader])
        }
        Event::Update(update) => update,
        Event::Heartbeat | Event::Ignored => return,
    };
    cluster.apply(ClusterUpdate::Mesos(update));
});
