#![no_main]
//! What a registry sends: WWW-Authenticate, Location, error text.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nixoci::registry::auth::parse_challenge(text);
        if let Some(resolved) = nixoci::registry::url::resolve(
            "https://reg.example:5000/v2/team/app/blobs/uploads/",
            text,
        ) {
            let _ = nixoci::registry::url::origin(&resolved);
        }
        let _ = nixoci::registry::client::printable(text);
    }
});
