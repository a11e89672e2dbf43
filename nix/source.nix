# The Rust sources, without build output or VCS data, so unrelated files do
# not change the packages' hashes.
builtins.path {
  name = "nixoci-source";
  path = ../.;
  filter =
    path: type:
    let
      base = baseNameOf path;
    in
    !(builtins.elem base [ "target" ".git" "result" ]) && builtins.match "result-.*" base == null;
}
