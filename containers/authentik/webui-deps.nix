# The web UI's npm packages: `npm ci --ignore-scripts` in web/, every
# node_modules tree kept (workspace members have their own). A
# fixed-output derivation: its hash is per platform (native esbuild, rollup
# and SWC packages).
{ lib, stdenvNoCC, nodejs_24, cacert, src, version, outputHash }:
stdenvNoCC.mkDerivation {
  pname = "authentik-webui-deps";
  inherit version src outputHash;
  nativeBuildInputs = [ nodejs_24 ];
  # As nixpkgs' fetchers do: a builder behind a proxy reaches the registry.
  impureEnvVars = lib.fetchers.proxyImpureEnvVars;
  # nixpkgs' Node reads OpenSSL's default CA store, which is empty in the
  # sandbox: npm must be given the CA bundle, or every fetch fails on TLS.
  NODE_EXTRA_CA_CERTS = "${cacert}/etc/ssl/certs/ca-bundle.crt";
  npm_config_cafile = "${cacert}/etc/ssl/certs/ca-bundle.crt";

  dontConfigure = true;
  buildPhase = ''
    runHook preBuild
    export HOME=$TMPDIR
    cd web
    npm ci --cache ./cache --ignore-scripts
    rm -rf cache node_modules/.package-lock.json
    runHook postBuild
  '';
  installPhase = ''
    runHook preInstall
    mkdir -p $out
    find . -name node_modules -prune -type d | sort | while read -r dir; do
      mkdir -p "$out/$(dirname "$dir")"
      cp -r "$dir" "$out/$dir"
    done
    runHook postInstall
  '';

  dontCheckForBrokenSymlinks = true;
  dontPatchShebangs = true;
  dontFixup = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}
