#![no_main]
//! Derivation files (`nixoci verify --drv` reads them from the store; they
//! may hold bytes that are not UTF-8).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(drv) = nixoci::nix::drv::parse_bytes(data) {
        let _ = drv.fixed_output();
        let _ = drv.is_impure();
        let _ = drv.attr("urls");
    }
});
