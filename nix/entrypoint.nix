# nixoci-entrypoint, statically linked (pass pkgsStatic.rustPlatform) so that
# it runs in any image; kept out of images that do not use it.
{ rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "nixoci-entrypoint";
  version = "0.1.0";
  src = import ./source.nix;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "nixoci-entrypoint" ];
  doCheck = false;
  meta.mainProgram = "nixoci-entrypoint";
}
