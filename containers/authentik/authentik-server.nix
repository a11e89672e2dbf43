# authentik's Go server (cmd/server, renamed bin/authentik), pointed at the
# app's lifecycle scripts and the web UI in the store. The vendor hook swaps
# in the generated API client; the goModules derivation keeps upstream's
# source, so vendorHash does not depend on those store paths.
{ buildGoModule, src, version, vendorHash, authentik-django, webui, api-go-vendor-hook }:
buildGoModule {
  pname = "authentik-server";
  inherit version src vendorHash;
  nativeBuildInputs = [ api-go-vendor-hook ];
  subPackages = [ "cmd/server" ];
  env.CGO_ENABLED = 0;

  postPatch = ''
    substituteInPlace internal/gounicorn/gounicorn.go --replace-fail './lifecycle' '${authentik-django}/lifecycle'
    substituteInPlace web/static.go --replace-fail './web' '${webui}'
    substituteInPlace internal/web/static.go --replace-fail './web' '${webui}'
  '';
  overrideModAttrs = _: { postPatch = ""; };

  postInstall = ''
    mv $out/bin/server $out/bin/authentik
  '';
}
