//! A `/v2/apps` snapshot (or an apps file) from arbitrary bytes, then compiled.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::cluster::{Cluster, ClusterUpdate};
use switchyard::discovery::marathon::api;
use switchyard::routing::{CompileConfig, compile};

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = api::parse_apps(data) {
        let mut cluster = Cluster::default();
        cluster.apply(ClusterUpdate::Snapshot(parsed.apps));
        let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
        let _ = compile(&cluster, &config);
    }
    let _ = api::parse_single_app(data);
});
