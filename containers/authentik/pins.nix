# Every pin of the authentik image, read from one TOML file
# (mirrors/authentik.toml, or fixture pins in tests). Evaluation fails, with
# the file named, when the version there, the image's version, the git tags
# and the fixed-output names disagree.
{ pinsFile, version, system }:
let
  inherit (builtins) filter head fromTOML readFile;
  pins = fromTOML (readFile pinsFile);
  fail = msg: throw "${toString pinsFile}: ${msg}";
  pinnedVersion = pins.version or (fail "no top-level `version`");
  source = name:
    let found = filter (s: s.name == name) (pins.source or [ ]);
    in if found == [ ] then fail "no [[source]] named `${name}`" else head found;
  atRev = name: rev:
    let s = source name;
    in if s.rev or null == rev then s
      else fail "[[source]] `${name}` is pinned at rev `${s.rev or "?"}`, but version ${version} needs `${rev}`";
  fod = name:
    let
      found = filter (f: f.name == name && (f.system or system) == system) (pins.fod or [ ]);
    in
    if found == [ ] then
      fail "no [[fod]] named `${name}`${if system != "x86_64-linux" then " for ${system}" else ""} (its name carries the version, ${version})"
    else (head found).outputHash;
in
if pinnedVersion != version then
  fail "version is ${pinnedVersion}, but containers/authentik/default.nix says ${version}; change both together"
else
  {
    inherit version;
    authentik = atRev "authentik" "version/${version}";
    client-go = atRev "authentik-client-go" "v3.${version}";
    opencontainers = source "opencontainers";
    pythonDepsHash = fod "authentik-python-deps-${version}";
    webuiDepsHash = fod "authentik-webui-deps-${version}";
    vendorHash = fod "authentik-server-${version}-go-modules";
  }
