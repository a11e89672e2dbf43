# The CI loop's third pipeline: the bench's synthetic closure (the spec
# make_store.py wrote) as Nix derivations, its biggest path in a layer of
# its own (the Nix library's buildLayer), and the image built by nix-build.
# The derivations copy the bench's files, so the sandbox must be off (as in
# the tests). `change`, when given, adds one small package on top: the
# everyday edit, after which only the image derivation rebuilds.
{ nixociBin, specFile, change ? "", system ? builtins.currentSystem }:
let
  nixoci = derivation {
    name = "nixoci-bench";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out/bin; /bin/cp ${builtins.path { path = nixociBin; name = "nixoci-bin"; }} $out/bin/nixoci" ];
  };
  lib = import ../nix { inherit nixoci system; };
  spec = builtins.fromJSON (builtins.readFile specFile);
  # `<hash>-bench-N` becomes the package `bench-N`, with the same files.
  package = node: derivation {
    name = builtins.substring 33 100 (baseNameOf node.path);
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "/bin/cp -r ${node.path} $out" ];
  };
  packages = map package spec.graph;
  changed = derivation {
    name = "app-change";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out/bin; echo '${change}' > $out/bin/app" ];
  };
  big = lib.buildLayer { deps = [ (builtins.head packages) ]; name = "big"; };
in
{
  inherit packages;
  image = lib.buildLayeredImage {
    name = "bench/app";
    tag = "1";
    format = "oci";
    contents = packages ++ (if change == "" then [ ] else [ changed ]);
    layers = [ big ];
  };
}
