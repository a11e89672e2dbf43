# nixpkgs' authentik package keeps authentik-django and the Go server (its
# `proxy`) in a `let`, so they are not attributes. This exposes them: from
# the package's attributes where a nixpkgs has them; otherwise the server is
# cut out of the `ak` wrapper's install script (keeping its string context),
# and authentik-django is found through the Python environment that script
# names, at build time, since pure evaluation cannot read derivation files.
{ authentik, bash, coreutils, system ? builtins.currentSystem }:
let
  inherit (builtins) split head filter isList substring stringLength storeDir;
  script = authentik.installPhase or "";
  # The first store path matching `pattern` in the script, as a substring of
  # it, so that it carries the context that builds it.
  pathIn =
    pattern:
    let
      parts = split "(${storeDir}/[0-9a-z]{32}-${pattern})" script;
      found = filter isList parts;
    in
    if found == [ ] then null else substring (stringLength (head parts)) (stringLength (head (head found))) script;
  server = pathIn "authentik-proxy-[^/\"' ]*";
  env = pathIn "python3-[^/\"' ]*-env";
  missing = what: throw "cannot find ${what} in this nixpkgs' authentik; pass it to containers/authentik explicitly";
  # authentik-django's own directory layout (blueprints, lifecycle, …), with
  # `blueprints` copied so that it is a real directory in this path.
  djangoFromEnv = derivation {
    name = "authentik-django-from-env";
    inherit system;
    builder = "${bash}/bin/bash";
    PATH = "${coreutils}/bin";
    args = [
      "-ec"
      ''
        target=$(readlink -f ${env}/lib/python3*/site-packages/authentik)
        root=''${target%/lib/python3*}
        mkdir -p $out
        cp -r "$root/blueprints" $out/blueprints
        for entry in "$root"/*; do
          name=$(basename "$entry")
          [ -e "$out/$name" ] || ln -s "$entry" "$out/$name"
        done
      ''
    ];
  };
in
{
  authentik-django =
    authentik.authentik-django or authentik.passthru.authentik-django or (if env == null then missing "authentik-django" else djangoFromEnv);
  authentik-server =
    authentik.authentik-server or authentik.passthru.authentik-server or (if server == null then missing "the authentik server" else server);
}
