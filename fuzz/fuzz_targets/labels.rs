//! Outside text that becomes routing input: Host headers, VIP labels, address blocks, DNS labels,
//! the edge labels (`SWITCHYARD_{n}_…`: limits, timeouts, header rules, pages).
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::cluster::names::{LabelRule, label};
use switchyard::routing::cidr::Cidr;
use switchyard::routing::edge;
use switchyard::routing::vhosts::host_key;
use switchyard::routing::vip;

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; 256];
    let _ = host_key(data, &mut buf);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vip::parse_label(text);
        let _ = Cidr::parse(text);
        let _ = vip::VipRange::parse(text);
        let _ = label(text, LabelRule::Rfc1123);
        let _ = label(text, LabelRule::Rfc952);
        let _ = edge::rate(text);
        // `KEY=value`: one edge label of port 0.
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        let labels = [(format!("SWITCHYARD_0_{key}"), value.to_string())]
            .into_iter()
            .collect();
        let _ = edge::read(&labels, 0);
    }
});
