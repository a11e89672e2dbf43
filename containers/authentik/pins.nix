# Every pin of the authentik image, read from one TOML file
# (mirrors/authentik.toml, or fixture pins in tests). Evaluation fails, with
# the file named, when the version there, the image's version, the git tags
# and the fixed-output names disagree; it warns when a fixed output's hash
# was made with another nixpkgs than `nixpkgsRev` (flake.lock's).
{ pinsFile, version, system, nixpkgsRev ? null }:
let
  inherit (builtins) filter head fromTOML readFile substring stringLength trace;
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
    else made (head found);
  # A pin made with another nixpkgs probably does not match this build.
  made = pin:
    let recorded = pin.nixpkgs or null;
    in
    if recorded == null || nixpkgsRev == null
      || substring 0 (stringLength recorded) nixpkgsRev == recorded
    then pin.outputHash
    else trace "warning: ${toString pinsFile}: [[fod]] `${pin.name}` was made with nixpkgs ${recorded}, but flake.lock holds ${nixpkgsRev}; its output probably differs now: run `nixoci pins update` (or the real-build job) for its new hash"
      pin.outputHash;
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
