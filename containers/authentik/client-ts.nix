# The TypeScript API client (@goauthentik/api), generated from schema.yml
# with upstream's generator config (scripts/api/ts-config.yaml: its
# templates and the options the web code relies on), and compiled with the
# web UI's TypeScript.
{ stdenvNoCC, openapi-generator-cli, nodejs_24, bash, src, webui-deps, version }:
stdenvNoCC.mkDerivation {
  pname = "authentik-client-ts";
  inherit version src;
  nativeBuildInputs = [ openapi-generator-cli nodejs_24 ];
  dontConfigure = true;
  buildPhase = ''
    runHook preBuild
    # The config names its templates under /local, the docker mount upstream
    # generates in: here that is the source tree.
    sed "s|/local/|$PWD/|g" scripts/api/ts-config.yaml > "$TMPDIR/ts-config.yaml"
    openapi-generator-cli generate -i schema.yml -g typescript-fetch -o client-ts \
      -c "$TMPDIR/ts-config.yaml" --additional-properties=npmVersion=${version} \
      --git-user-id goauthentik --git-repo-id authentik
    cd client-ts
    # The web UI's packages, read-only in the store. Their programs start
    # with `#!/usr/bin/env node`, which the sandbox lacks and the store copy
    # cannot be patched: node_modules/.bin gets wrappers that run each with
    # this node instead.
    mkdir -p node_modules/.bin
    for package in ${webui-deps}/node_modules/*; do ln -s "$package" node_modules/; done
    for program in ${webui-deps}/node_modules/.bin/*; do
      [ -e "$program" ] || continue
      printf '#!${bash}/bin/bash\nexec %s %s "$@"\n' "$(command -v node)" "$program" \
        > "node_modules/.bin/''${program##*/}"
      chmod +x "node_modules/.bin/''${program##*/}"
    done
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
