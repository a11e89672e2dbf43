# authentik's Python application: the locked virtual environment (its
# interpreter restored), entry-point scripts, the workspace packages,
# oci-python, the app and lifecycle scripts in site-packages, and the
# built-in blueprints as a real directory. Patched to find itself, its
# blueprints and the web UI's icons in the store.
{
  stdenv,
  python314,
  autoPatchelfHook,
  bash,
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
  python-deps,
  opencontainers-src,
  webui,
  version,
}:
stdenv.mkDerivation {
  pname = "authentik-django";
  inherit version src;

  nativeBuildInputs = [ autoPatchelfHook ];
  buildInputs = [ python314 stdenv.cc.cc.lib libxml2 libxslt xmlsec openssl libpq krb5.lib libtool.lib libffi zlib ];

  # Each edit must apply: a silent miss would ship an app that looks in /.
  postPatch = ''
    edit() {
      local file=$1 expression=$2
      local before; before=$(cat "$file")
      sed -i "$expression" "$file"
      if [ "$before" = "$(cat "$file")" ]; then
        echo "authentik-django: '$expression' changed nothing in $file" >&2
        exit 1
      fi
    }
    edit authentik/root/settings.py "s|^BASE_DIR = .*|BASE_DIR = Path(\"$out\")|"
    edit authentik/lib/default.yml "s|^blueprints_dir:.*|blueprints_dir: $out/blueprints|"
    edit authentik/stages/email/utils.py 's|"web/|"${webui}/|g'
    edit lifecycle/ak '1s|.*|#!${bash}/bin/bash|'
    # Upstream bug #19616: the rbac migration needs authentik_core's 0056.
    core=$(basename authentik/core/migrations/0056_*.py .py)
    for migration in authentik/rbac/migrations/0010_*.py; do
      edit "$migration" "s|dependencies = \[|dependencies = [\n        (\"authentik_core\", \"$core\"),|"
    done
  '';

  dontConfigure = true;
  dontBuild = true;
  dontPatchShebangs = true;

  installPhase = ''
    runHook preInstall
    site=$out/${python314.sitePackages}
    python=$out/bin/${python314.executable}
    cp -r ${python-deps} $out
    chmod -R u+w $out
    substituteInPlace $out/pyvenv.cfg --replace-fail "@python@" "${python314}"
    mkdir -p $out/bin
    ln -s ${python314}/bin/${python314.executable} $python
    ln -s ${python314.executable} $out/bin/python3
    ln -s ${python314.executable} $out/bin/python
    # A console-script entry point becomes a script on this interpreter; a
    # program without one (dumb-init ships its binary as a wheel data
    # script) must already be in bin/, from the virtual environment.
    for script in gunicorn uvicorn dramatiq dumb-init; do
      if $python - "$site" "$script" "$python" > "$TMPDIR/$script" <<'PY'
    import importlib.metadata, sys
    site, name, python = sys.argv[1:]
    sys.path.insert(0, site)
    entries = list(importlib.metadata.entry_points(group="console_scripts", name=name))
    if not entries:
        sys.exit(1)
    entry = entries[0]
    print(f"#!{python}\nimport sys\nsys.path.insert(0, {site!r})\n"
          f"from {entry.module} import {entry.attr.split('.')[0]}\nsys.exit({entry.attr}())")
    PY
      then
        install -m 0555 "$TMPDIR/$script" $out/bin/$script
      elif [ -f $out/bin/$script ] && [ -x $out/bin/$script ]; then
        echo "authentik-django: $script has no entry point; keeping its program from the environment"
      else
        echo "authentik-django: $script has neither an entry point nor a program in bin/" >&2
        exit 1
      fi
    done
    cp -r ${opencontainers-src}/opencontainers $site/opencontainers
    for package in packages/*/*/__init__.py; do
      cp -r "$(dirname "$package")" $site/
    done
    cp -r authentik lifecycle $site/
    ln -s $site/authentik $out/authentik
    ln -s $site/lifecycle $out/lifecycle
    cp -r blueprints $out/blueprints
    cp manage.py $out/manage.py
    runHook postInstall
  '';
}
