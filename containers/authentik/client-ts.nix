# The TypeScript API client (@goauthentik/api), generated from schema.yml
# and compiled with the web UI's TypeScript.
{ stdenvNoCC, openapi-generator-cli, nodejs_24, src, webui-deps, version }:
stdenvNoCC.mkDerivation {
  pname = "authentik-client-ts";
  inherit version src;
  nativeBuildInputs = [ openapi-generator-cli nodejs_24 ];
  dontConfigure = true;
  buildPhase = ''
    runHook preBuild
    openapi-generator-cli generate -i schema.yml -g typescript-fetch -o client-ts \
      --additional-properties=npmName=@goauthentik/api,npmVersion=${version},typescriptThreePlus=true,supportsES6=true
    cd client-ts
    ln -s ${webui-deps}/node_modules node_modules
    npm run build
    runHook postBuild
  '';
  installPhase = ''
    runHook preInstall
    mkdir -p $out
    cp -r dist package.json $out/
    runHook postInstall
  '';
}
