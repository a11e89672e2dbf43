# nixoci (the CLI), built from this repository with the checked-in Cargo.lock.
{ rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "nixoci";
  version = "0.1.0";
  src = import ./source.nix;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--bin" "nixoci" ];
  # The tests need Nix, registries and runc; CI runs them (.ci/run).
  doCheck = false;
  meta.mainProgram = "nixoci";
}
