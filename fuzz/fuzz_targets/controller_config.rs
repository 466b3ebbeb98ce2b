//! The daemon's TOML configuration: `ibs_controller::config::Config::parse` (TOML, then component and
//! listen-address validation).
#![no_main]
use ibs_controller::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text);
    }
});
