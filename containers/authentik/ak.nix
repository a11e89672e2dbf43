# `ak`: runs authentik's lifecycle dispatcher with the server and the app's
# virtual environment on PATH, from the app's directory.
{ writeShellScriptBin, authentik-django, authentik-server }:
writeShellScriptBin "ak" ''
  export PYTHONDONTWRITEBYTECODE=1
  export PATH="${authentik-server}/bin:${authentik-django}/bin:$PATH"
  export VIRTUAL_ENV="${authentik-django}"
  cd "${authentik-django}"
  exec ${authentik-django}/lifecycle/ak "$@"
''
