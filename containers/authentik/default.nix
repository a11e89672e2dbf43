# The authentik image our users run (blumeops), rebuilt on nixoci. Every
# component is an argument, so the flake can wire them; `nix-build
# containers/authentik` takes them from <nixpkgs>.
{
  pkgs ? import <nixpkgs> { },
  system ? pkgs.system or builtins.currentSystem,
  nixoci ? pkgs.nixoci or (pkgs.callPackage ../../nix/package.nix { }),
  nixoci-entrypoint ?
    pkgs.nixoci-entrypoint or ((pkgs.pkgsStatic or pkgs).callPackage ../../nix/entrypoint.nix { }),
  nixociLib ? import ../../nix { inherit nixoci nixoci-entrypoint pkgs system; },
  parts ? import ../../nix/authentik-parts.nix {
    inherit (pkgs) authentik coreutils;
    bash = pkgs.bash or pkgs.bashInteractive;
    inherit system;
  },
  ak ? pkgs.authentik,
  authentik-django ? parts.authentik-django,
  authentik-server ? parts.authentik-server,
  bashInteractive ? pkgs.bashInteractive,
  coreutils ? pkgs.coreutils,
  cacert ? pkgs.cacert,
  tzdata ? pkgs.tzdata,
}:
let
  # CI tags images v<version>-<sha7>-nix from the first line like this one.
  version = "2026.2.0";
in
nixociLib.buildLayeredImage {
  name = "blumeops/authentik";
  tag = "v${version}";
  contents = [ ak authentik-django authentik-server bashInteractive coreutils cacert tzdata ];
  config = {
    # Built-in blueprints are linked into /blueprints as real directories with
    # a symlink per file (authentik's rglob skips symlinked directories); a
    # ConfigMap mounted at /blueprints/custom is left alone.
    Entrypoint = nixociLib.mkEntrypoint {
      links = [ { from = "${authentik-django}/blueprints"; to = "/blueprints"; } ];
      env = { AUTHENTIK_BLUEPRINTS_DIR = "/blueprints"; };
      exec = [ "${ak}/bin/ak" ];
    };
    Env = [
      "SSL_CERT_FILE=${cacert}/etc/ssl/certs/ca-bundle.crt"
      "TZDIR=${tzdata}/share/zoneinfo"
      "TMPDIR=/tmp"
    ];
    ExposedPorts = { "9000/tcp" = { }; "9443/tcp" = { }; };
    User = "65534";
  };
  rootEntries = [
    { type = "directory"; path = "/tmp"; mode = "1777"; }
    { type = "directory"; path = "/blueprints"; mode = "0777"; }
  ];
  passthru = { inherit version; };
}
