# authentik's Python dependencies: `uv sync --frozen` of uv.lock into a
# virtual environment. A fixed-output derivation (uv reaches the package
# index itself), so its output may hold no store path: bin/ goes, the
# interpreter becomes @python@ in pyvenv.cfg, and every other store path
# is removed with remove-references-to.
{
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

  UV_PYTHON = "${python314}/bin/python3.14";
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
    rm -rf $out/bin
    find $out -name '*.pyc' -delete
    refs=$(grep -rhoa '/nix/store/[a-z0-9]\{32\}-[^/"'"'"' ]*' $out | sort -u || true)
    for ref in $refs; do
      grep -rlF "$ref" $out | while read -r file; do remove-references-to -t "$ref" "$file"; done
    done
    runHook postInstall
  '';

  dontFixup = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}
