#![no_main]
//! The entrypoint wrapper's config.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<nixoci_entrypoint::Config>(data);
});
