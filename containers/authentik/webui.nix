# The web UI: the npm packages, with @goauthentik/api replaced by the client
# generated from this version's schema, built with `npm run build` and
# `npm run build:sfe`. Outputs dist/ and authentik/ (icons, assets).
{ stdenvNoCC, nodejs_24, src, webui-deps, client-ts, version }:
stdenvNoCC.mkDerivation {
  pname = "authentik-webui";
  inherit version src;
  nativeBuildInputs = [ nodejs_24 ];
  NODE_ENV = "production";
  NODE_OPTIONS = "--openssl-legacy-provider";

  # web/packages/core/version/node.js stays as upstream wrote it: the build
  # scripts import AuthentikVersion, readGitBuildHash and readBuildIdentifier
  # from it, and Node 24 reads its JSON import (`with { type: "json" }`).

  dontConfigure = true;
  buildPhase = ''
    runHook preBuild
    export HOME=$TMPDIR
    cd web
    cp -r ${webui-deps}/. .
    chmod -R u+w .
    rm -rf node_modules/@goauthentik/api
    ln -s ${client-ts} node_modules/@goauthentik/api
    # The build tools (rollup, wireit, lit-localize, esbuild) start with
    # `#!/usr/bin/env node`.
    patchShebangs --build node_modules
    npm run build
    npm run build:sfe
    runHook postBuild
  '';
  installPhase = ''
    runHook preInstall
    mkdir -p $out
    cp -r dist $out/dist
    cp -r authentik $out/authentik
    runHook postInstall
  '';
}
