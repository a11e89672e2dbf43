#![no_main]
//! Derivation files (`nixoci verify --drv` reads them from the store).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(drv) = nixoci::nix::drv::parse(text) {
            let _ = drv.fixed_output();
            let _ = drv.attr("urls");
        }
    }
});
