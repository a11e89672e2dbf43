# nixoci's Nix library: nixpkgs-compatible `buildLayeredImage` and
# `streamLayeredImage` built by nixoci itself, and `mkEntrypoint` for the
# nixoci-entrypoint wrapper.
#
# The image derivation runs nixoci as its builder (structured attrs +
# exportReferencesGraph), so the default path needs no bash and no stdenv;
# only `extraCommands` and `fakeRootCommands` need a shell.
{
  # A package with bin/nixoci.
  nixoci,
  # A package with bin/nixoci-entrypoint (static); only mkEntrypoint needs it.
  nixoci-entrypoint ? null,
  # nixpkgs, for the shell, coreutils and fakeroot that extraCommands and
  # fakeRootCommands run with; without it they run with the host's /bin/sh.
  pkgs ? null,
  system ? builtins.currentSystem,
}:
let
  inherit (builtins) isList filter head map toJSON split placeholder;

  goArch =
    {
      "x86_64-linux" = "amd64";
      "aarch64-linux" = "arm64";
      "i686-linux" = "386";
      "armv7l-linux" = "arm";
      "riscv64-linux" = "riscv64";
    }
    .${system} or "amd64";

  unique = list: builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ] list;

  # Every exact store path a value mentions ("${pkg}/bin/x" gives "${pkg}"),
  # with its string context, for exportReferencesGraph.
  storePathsIn =
    value:
    let
      parts = split "(${builtins.storeDir}/[0-9a-z]{32}-[-+._?=0-9a-zA-Z]+)" (toJSON value);
    in
    unique (map head (filter isList parts));

  toList = x: if isList x then x else [ x ];

  lowerName = name: builtins.replaceStrings
    [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ]
    name;

  shell = if pkgs != null then "${pkgs.bash or pkgs.bashInteractive}/bin/bash" else "/bin/sh";
  tools = if pkgs == null then [ ] else filter (p: p != null) [ (pkgs.coreutils or null) (pkgs.findutils or null) ];
  toolPath = if tools == [ ] then "/usr/bin:/bin" else builtins.concatStringsSep ":" (map (p: "${p}/bin") tools);

  # What extraCommands and fakeRootCommands make: `root/`, and the mode of
  # every entry recorded inside the build (the store resets modes): `modes`,
  # or `owners` with the uid and gid fakeroot saw, when fakeRootCommands ran.
  customisation =
    { name, extraCommands, fakeRootCommands }:
    let
      fakeroot =
        if pkgs != null && pkgs ? fakeroot then "${pkgs.fakeroot}/bin/fakeroot"
        else throw "fakeRootCommands needs pkgs with fakeroot";
      script = ''
        mkdir -p $out/root
        cd $out/root
        . "$extraCommandsPath"
      '' + (if fakeRootCommands == "" then ''
        find . -mindepth 1 -printf '%P\0%m\0' > $out/modes
      '' else ''
        ${fakeroot} -- ${shell} -ec '. "$fakeRootCommandsPath"; find . -mindepth 1 -printf "%P\0%U\0%G\0%m\0" > "$out/owners"'
      '');
    in
    derivation {
      name = "${name}-customisation";
      inherit system extraCommands fakeRootCommands;
      builder = shell;
      PATH = toolPath;
      passAsFile = [ "extraCommands" "fakeRootCommands" ];
      args = [ "-ec" script ];
    };

  /**
    The image as an OCI layout directory (nixpkgs' buildLayeredImage
    arguments, plus `layering`, `compression` and `rootEntries`).
  */
  mkImage =
    {
      name,
      tag ? null,
      contents ? [ ],
      config ? { },
      created ? "1970-01-01T00:00:01Z",
      mtime ? "1970-01-01T00:00:01Z",
      maxLayers ? 100,
      uid ? 0,
      gid ? 0,
      uname ? "root",
      gname ? "root",
      extraCommands ? "",
      fakeRootCommands ? "",
      enableFakechroot ? false,
      includeStorePaths ? true,
      architecture ? goArch,
      fromImage ? null,
      layering ? "auto",
      compression ? "gzip",
      # nixpkgs' archive compressor: "gz", "zstd" or "none" (mapped onto the layers).
      compressor ? null,
      rootEntries ? [ ],
      # Layers made with buildLayer: they go first, and the store paths they
      # hold leave the rest of the plan (nix2container's meaning).
      layers ? [ ],
      passthru ? { },
      meta ? { },
      stream ? false,
    }:
    assert maxLayers > 1;
    assert !enableFakechroot || throw "enableFakechroot is not supported: use rootEntries or fakeRootCommands";
    let
      baseName = baseNameOf name;
      extra =
        if extraCommands == "" && fakeRootCommands == "" then
          null
        else
          customisation { name = baseName; inherit extraCommands fakeRootCommands; };
      layerCompression =
        if compressor == null then compression
        else { gz = "gzip"; zstd = "zstd"; none = "none"; }.${compressor};
      spec = {
        name = lowerName name;
        contents = map toString (toList contents);
        inherit config created mtime maxLayers uid gid uname gname architecture includeStorePaths rootEntries;
        layering = layering;
        compression = layerCompression;
        extraRoots = if extra == null then [ ] else [ "${extra}" ];
        excludePaths = if extra == null then [ ] else [ "${extra}" ];
        fromImage = if fromImage == null then null else "${fromImage}";
        layers = map toString layers;
      };
      # Like nixpkgs, an untagged image is tagged by a hash of what it is made of.
      imageTag = if tag != null then tag else builtins.substring 0 32 (builtins.hashString "sha256" (toJSON spec));
      roots =
        if includeStorePaths then
          storePathsIn { inherit contents config rootEntries; } ++ (if extra == null then [ ] else [ extra ])
        else
          [ ];
      drv = derivation {
        name = if stream then "stream-${baseName}" else "${baseName}-oci";
        inherit system;
        builder = "${nixoci}/bin/nixoci";
        args =
          if stream then
            [ "nix-helper" "stream-script" "--attrs" ".attrs.json" "-o" (placeholder "out") ]
          else
            [ "build" "--spec" ".attrs.json" "--quiet" "-o" (placeholder "out") ];
        __structuredAttrs = true;
        exportReferencesGraph.graph = roots;
        nixoci = spec // { tag = imageTag; };
      };
    in
    drv
    // passthru
    // {
      inherit imageTag meta;
      imageName = lowerName name;
    };
in
{
  /**
    Like nixpkgs' dockerTools.buildLayeredImage, but the result is an OCI
    image layout directory (what `nixoci push` and `skopeo copy oci:` take).
  */
  buildLayeredImage = args: mkImage (removeAttrs args [ "stream" ]);

  /**
    Like nixpkgs' dockerTools.streamLayeredImage: a script that writes the
    image to stdout as a docker-archive (`./result | docker load`).
  */
  streamLayeredImage = args: mkImage ((removeAttrs args [ "stream" ]) // { stream = true; });

  /**
    One layer as a derivation of its own (nix2container's buildLayer): the
    closure of `deps`, less the store paths of the `layers` it builds on,
    stored once as a compressed blob and meta.json, so that Nix and binary
    caches keep it and an image that lists it in `layers` only points at it.
  */
  buildLayer =
    {
      deps,
      layers ? [ ],
      name ? "layer",
      compression ? "gzip",
      mtime ? "1970-01-01T00:00:01Z",
      uid ? 0,
      gid ? 0,
      uname ? "root",
      gname ? "root",
    }:
    derivation {
      name = "${name}-layer";
      inherit system;
      builder = "${nixoci}/bin/nixoci";
      args = [ "nix-helper" "layer" "--attrs" ".attrs.json" "-o" (placeholder "out") ];
      __structuredAttrs = true;
      exportReferencesGraph.graph = toList deps;
      nixoci = {
        contents = map toString (toList deps);
        layers = map toString layers;
        inherit compression mtime uid gid uname gname;
      };
    };

  /**
    The Entrypoint list for nixoci-entrypoint: mirror `links` (real
    directories, a symlink per file), set `env`, then exec `exec` with the
    container's arguments appended. The config's store paths join the closure.
  */
  mkEntrypoint =
    { links ? [ ], env ? { }, exec }:
    let
      wrapper =
        if nixoci-entrypoint != null then nixoci-entrypoint
        else throw "mkEntrypoint needs nixoci-entrypoint";
      configFile = derivation {
        name = "nixoci-entrypoint.json";
        inherit system;
        builder = "${nixoci}/bin/nixoci";
        args = [ "nix-helper" "write-json" "--attrs" ".attrs.json" "--key" "entrypoint" "-o" (placeholder "out") ];
        __structuredAttrs = true;
        entrypoint = { inherit links env; exec = toList exec; };
      };
    in
    [ "${wrapper}/bin/nixoci-entrypoint" "${configFile}" ];

  inherit storePathsIn;
}
