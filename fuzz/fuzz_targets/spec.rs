#![no_main]
//! The build spec (JSON, written by the Nix library or by hand).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<nixoci::spec::Spec>(data);
});
