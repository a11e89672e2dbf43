# The Go API client, generated from authentik's schema.yml with the
# client-go mirror's generator config, go.mod and go.sum.
{ stdenvNoCC, openapi-generator-cli, src, client-go-src, version }:
stdenvNoCC.mkDerivation {
  pname = "authentik-client-go";
  inherit version src;
  nativeBuildInputs = [ openapi-generator-cli ];
  dontConfigure = true;
  # The mirror's config.yaml names its templates as /local/templates/ (the
  # docker mount upstream generates in): point it at the source instead.
  buildPhase = ''
    runHook preBuild
    sed 's|/local/|${client-go-src}/|g' ${client-go-src}/config.yaml > "$TMPDIR/config.yaml"
    openapi-generator-cli generate -i schema.yml -g go -o generated \
      -c "$TMPDIR/config.yaml" --git-user-id goauthentik --git-repo-id client-go
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
