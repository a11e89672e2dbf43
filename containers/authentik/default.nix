# The authentik image our users run (blumeops), built by nixoci from the
# mirrored supply chain only: every source, fixed-output hash and revision
# comes from mirrors/authentik.toml (or `pinsFile`), and every component is
# built here, not taken from nixpkgs' authentik package.
# `nix-build containers/authentik` takes nixpkgs from <nixpkgs>;
# `nix-build containers/authentik -A components.webui` builds one part.
{
  pkgs ? import <nixpkgs> { },
  system ? pkgs.system or builtins.currentSystem,
  nixoci ? pkgs.nixoci or (pkgs.callPackage ../../nix/package.nix { }),
  nixoci-entrypoint ?
    pkgs.nixoci-entrypoint or ((pkgs.pkgsStatic or pkgs).callPackage ../../nix/entrypoint.nix { }),
  nixociLib ? import ../../nix { inherit nixoci nixoci-entrypoint pkgs system; },
  # The pins; tests pass pins of their fixture mirrors.
  pinsFile ? ../../mirrors/authentik.toml,
  # The nixpkgs revision flake.lock pins, which the fixed-output hashes
  # should have been made with (evaluation warns otherwise).
  nixpkgsRev ?
    if builtins.pathExists ../../flake.lock
    then (builtins.fromJSON (builtins.readFile ../../flake.lock)).nodes.nixpkgs.locked.rev or null
    else null,
}:
let
  # CI tags images v<version>-<sha7>-nix from the first line like this one;
  # evaluation fails unless the pins say the same.
  version = "2026.2.0";
  pins = import ./pins.nix { inherit pinsFile version system nixpkgsRev; };
  # Every component gets the one version, if it takes one.
  call = file: args:
    let f = import file;
    in pkgs.callPackage f ((if builtins.functionArgs f ? version then { inherit version; } else { }) // args);

  sources = call ./sources.nix { inherit pins; };
  inherit (sources) src client-go-src opencontainers-src;
  components = rec {
    inherit src client-go-src opencontainers-src;
    python-deps = call ./python-deps.nix { inherit src; outputHash = pins.pythonDepsHash; };
    webui-deps = call ./webui-deps.nix { inherit src; outputHash = pins.webuiDepsHash; };
    client-ts = call ./client-ts.nix { inherit src webui-deps; };
    client-go = call ./client-go.nix { inherit src client-go-src; };
    webui = call ./webui.nix { inherit src webui-deps client-ts; };
    authentik-django = call ./authentik-django.nix { inherit src python-deps opencontainers-src webui; };
    api-go-vendor-hook = call ./api-go-vendor-hook.nix { inherit client-go; };
    authentik-server = call ./authentik-server.nix {
      inherit src authentik-django webui api-go-vendor-hook;
      inherit (pins) vendorHash;
    };
    ak = call ./ak.nix { inherit authentik-django authentik-server; };
  };
  inherit (components) ak authentik-django authentik-server webui;
  # The big, slow-changing parts get layers of their own (derivations that
  # Nix keeps), so that a change to the wrapper or the config rebuilds none
  # of them; each builds on the ones before it.
  baseLayer = nixociLib.buildLayer {
    name = "authentik-base";
    deps = [ pkgs.bashInteractive pkgs.coreutils pkgs.cacert pkgs.tzdata ];
  };
  webuiLayer = nixociLib.buildLayer {
    name = "authentik-webui";
    deps = [ webui ];
    layers = [ baseLayer ];
  };
  pythonLayer = nixociLib.buildLayer {
    name = "authentik-python";
    deps = [ authentik-django ];
    layers = [ baseLayer webuiLayer ];
  };
  serverLayer = nixociLib.buildLayer {
    name = "authentik-server";
    deps = [ authentik-server ];
    layers = [ baseLayer webuiLayer pythonLayer ];
  };
  blueprintsDir = "/blueprints";
  tmpDir = "/tmp";
in
nixociLib.buildLayeredImage {
  name = "blumeops/authentik";
  tag = "v${version}";
  # The registry-ready OCI layout (compressed layers, explicit layers kept
  # as links), not nixpkgs' docker-archive: what CI pushes.
  format = "oci";
  contents = [ ak authentik-django authentik-server pkgs.bashInteractive pkgs.coreutils pkgs.cacert pkgs.tzdata ];
  layers = [ baseLayer webuiLayer pythonLayer serverLayer ];
  config = {
    # Built-in blueprints are linked into /blueprints as real directories with
    # a symlink per file (authentik's rglob skips symlinked directories); a
    # ConfigMap mounted at /blueprints/custom is left alone. The wrapper's
    # TMPDIR and blueprint directory are defaults: values the pod spec sets
    # win, as they did with the deployment's own entrypoint.
    Entrypoint = nixociLib.mkEntrypoint {
      links = [ { from = "${authentik-django}/blueprints"; to = blueprintsDir; } ];
      defaultEnv = { AUTHENTIK_BLUEPRINTS_DIR = blueprintsDir; TMPDIR = tmpDir; };
      exec = [ "${ak}/bin/ak" ];
    };
    Env = [
      "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
      "TZDIR=${pkgs.tzdata}/share/zoneinfo"
      "TMPDIR=${tmpDir}"
      # Also for `kubectl exec … ak`, which does not run the entrypoint.
      "AUTHENTIK_BLUEPRINTS_DIR=${blueprintsDir}"
    ];
    ExposedPorts = { "9000/tcp" = { }; "9443/tcp" = { }; };
    User = "65534";
  };
  rootEntries = [
    { type = "directory"; path = tmpDir; mode = "1777"; }
    { type = "directory"; path = blueprintsDir; mode = "0777"; }
    # authentik's file storage (storage.media.file.path) and certificate
    # discovery write here as the image's user.
    { type = "directory"; path = "/media"; mode = "0755"; uid = 65534; gid = 65534; }
    { type = "directory"; path = "/certs"; mode = "0755"; uid = 65534; gid = 65534; }
  ];
  passthru = {
    inherit version components;
    layers = { base = baseLayer; webui = webuiLayer; python = pythonLayer; server = serverLayer; };
  };
}
