#![no_main]
//! `--root` entries and the JSON root entries of a spec.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nixoci::layer::rootfs::RootEntry::parse_cli(text);
    }
    let _ = serde_json::from_slice::<nixoci::layer::rootfs::RootEntry>(data);
});
