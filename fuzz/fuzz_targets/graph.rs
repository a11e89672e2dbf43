#![no_main]
//! Closure graphs in every format `--graph` and the spec take.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(closure) = nixoci::closure::parse_graph(text, "/nix/store", "fuzz") {
            let _ = nixoci::layering::popularity_order(&closure);
            let _ = nixoci::layering::auto_layer(&closure, 5);
        }
    }
});
