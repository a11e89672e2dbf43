# authentik's Python dependencies: `uv sync --frozen` of uv.lock into a
# virtual environment. A fixed-output derivation (uv reaches the package
# index itself), so its output may hold no store path: bin/'s scripts go,
# the interpreter becomes @python@ in pyvenv.cfg, and every other store path
# is removed with remove-references-to.
{
  lib,
  stdenv,
  python314,
  uv,
  git,
  cacert,
  pkg-config,
  removeReferencesTo,
  postgresql,
  krb5,
  libxml2,
  libxslt,
  xmlsec,
  openssl,
  libpq,
  libtool,
  libffi,
  zlib,
  src,
  version,
  outputHash,
}:
stdenv.mkDerivation {
  pname = "authentik-python-deps";
  inherit version src outputHash;

  nativeBuildInputs = [ python314 uv git cacert pkg-config removeReferencesTo postgresql.pg_config krb5 ];
  buildInputs = [ libxml2 libxslt xmlsec openssl libpq libtool libffi zlib ];

  # As nixpkgs' fetchers do: a builder behind a proxy reaches the index.
  impureEnvVars = lib.fetchers.proxyImpureEnvVars;
  UV_PYTHON = "${python314}/bin/${python314.executable}";
  UV_LINK_MODE = "copy";
  SSL_CERT_FILE = "${cacert}/etc/ssl/certs/ca-bundle.crt";
  GIT_SSL_CAINFO = "${cacert}/etc/ssl/certs/ca-bundle.crt";
  NIX_CFLAGS_COMPILE = "-include gssapi/gssapi_ext.h";

  dontConfigure = true;
  buildPhase = ''
    runHook preBuild
    export HOME=$TMPDIR
    uv sync --frozen --no-install-project --no-install-workspace --no-dev
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    mv .venv $out
    substituteInPlace $out/pyvenv.cfg --replace-fail "${python314}" "@python@"
    # bin/ holds the interpreter's links, activation scripts and scripts
    # that start with its store path (authentik-django makes its own); the
    # programs that wheels ship as data scripts (dumb-init's binary) stay.
    for file in $out/bin/*; do
      if [ -L "$file" ] || [ "$(head -c 4 "$file")" != $'\x7fELF' ]; then rm "$file"; fi
    done
    find $out -name '*.pyc' -delete
    # Every store path mentioned is stripped, by its hash, in one pass over
    # the files that mention any (file names are NUL-separated; one hash
    # can appear under several names).
    hashes=$(grep -rhoa '/nix/store/[a-z0-9]\{32\}' $out | sort -u || true)
    if [ -n "$hashes" ]; then
      targets=()
      for hash in $hashes; do targets+=(-t "$hash"); done
      grep -rlaZ '/nix/store/[a-z0-9]\{32\}' $out > "$TMPDIR/referring" || true
      xargs -0 -r remove-references-to "''${targets[@]}" < "$TMPDIR/referring"
    fi
    runHook postInstall
  '';

  dontFixup = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}
