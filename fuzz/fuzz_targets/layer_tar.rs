#![no_main]
//! Layer tar streams behind the guard (`check`, `fromImage`, verify's tarballs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let guarded = nixoci::media::tar_guard::TarGuard::new(data);
    let mut archive = tar::Archive::new(guarded);
    if let Ok(entries) = archive.entries() {
        for entry in entries.take(1000) {
            let Ok(mut entry) = entry else { break };
            let _ = entry.path_bytes();
            let _ = entry.link_name_bytes();
            let _ = std::io::copy(&mut entry, &mut std::io::sink());
        }
    }
});
