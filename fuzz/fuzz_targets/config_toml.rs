//! A configuration file as `switchyard check` reads it: arbitrary text through TOML, the serde
//! defaults and `validate`, then what startup derives from an accepted one.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchyard::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, Path::new("/etc/switchyard")) {
        let _ = config.reserved_ports();
        let _ = config.dns.zone_config();
        let _ = config.vip.settings();
        let _ = config.compile_config();
    }
});
