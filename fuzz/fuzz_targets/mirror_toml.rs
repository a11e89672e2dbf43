#![no_main]
//! `mirrors/*.toml` pin files.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = toml::from_str::<nixoci::verify::Manifest>(text);
    }
});
