# The Go API client, generated from authentik's schema.yml with the
# client-go mirror's generator config, go.mod and go.sum.
{ stdenvNoCC, openapi-generator-cli, src, client-go-src, version }:
stdenvNoCC.mkDerivation {
  pname = "authentik-client-go";
  inherit version src;
  nativeBuildInputs = [ openapi-generator-cli ];
  dontConfigure = true;
  buildPhase = ''
    runHook preBuild
    openapi-generator-cli generate -i schema.yml -g go -o generated \
      -c ${client-go-src}/config.yaml --git-user-id goauthentik --git-repo-id client-go
    cp ${client-go-src}/go.mod ${client-go-src}/go.sum generated/
    rm -rf generated/test generated/docs generated/.openapi-generator generated/git_push.sh
    runHook postBuild
  '';
  installPhase = ''
    runHook preInstall
    cp -r generated $out
    runHook postInstall
  '';
}
