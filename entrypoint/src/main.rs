//! `nixoci-entrypoint CONFIG.json [ARGS…]`: links, environment, then exec.

fn main() {
    std::process::exit(nixoci_entrypoint::run(std::env::args_os().collect()));
}
