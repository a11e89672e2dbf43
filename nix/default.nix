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

  # What extraCommands and fakeRootCommands make: `root/` (the merged
  # `contents`, as symlinkJoin makes them, changed by the commands), and the
  # mode of every entry recorded inside the build (the store resets modes):
  # `modes`, or `owners` with the uid and gid fakeroot saw, when
  # fakeRootCommands ran.
  customisation =
    { name, contents, extraCommands, fakeRootCommands }:
    let
      fakeroot =
        if pkgs != null && pkgs ? fakeroot then "${pkgs.fakeroot}/bin/fakeroot"
        else throw "fakeRootCommands needs pkgs with fakeroot";
      script = ''
        mkdir -p $out/root
        ${nixoci}/bin/nixoci nix-helper link-contents -o $out/root ${toString contents}
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

  # includeNixDB: nixpkgs' commands, put before extraCommands. They register
  # the closure of `contents` in nix/var/nix/db with `nix-store --load-db`
  # (registration times reset, so the layer is reproducible) and add a GC
  # root per content.
  nixDbCommands =
    { name, contents }:
    let
      need = attr: if pkgs != null && pkgs ? ${attr} then pkgs.${attr} else throw "includeNixDB needs pkgs with ${attr}";
      registration = derivation {
        name = "${name}-nix-db-registration";
        inherit system;
        builder = "${nixoci}/bin/nixoci";
        args = [ "nix-helper" "registration" "--attrs" ".attrs.json" "-o" (placeholder "out") ];
        __structuredAttrs = true;
        exportReferencesGraph.graph = contents;
      };
    in
    ''
      NIX_REMOTE="local?root=$PWD" USER=nobody ${need "nix"}/bin/nix-store --load-db < ${registration}
      ${need "sqlite"}/bin/sqlite3 nix/var/nix/db/db.sqlite "UPDATE ValidPaths SET registrationTime = 315532800"
      mkdir -p nix/var/nix/gcroots/docker
      for path in ${toString contents}; do
        ln -s "$path" "nix/var/nix/gcroots/docker/''${path##*/}"
      done
    '';

  # nixpkgs' `compressor` of a docker-archive result: nixoci's setting and
  # the file name's extension.
  compressors = {
    gz = { archive = "gzip"; ext = ".gz"; layers = "gzip"; };
    zstd = { archive = "zstd"; ext = ".zst"; layers = "zstd"; };
    none = { archive = "none"; ext = ""; layers = "none"; };
  };

  /**
    The image. With `format = "docker-archive"` (nixpkgs' result, the
    default) a docker-archive file compressed whole by `compressor`; with
    `format = "oci"` an OCI image layout directory, whose layers take
    `compression` (or `compressor`'s kind). `stream` gives
    streamLayeredImage's script instead.
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
      includeNixDB ? false,
      architecture ? goArch,
      fromImage ? null,
      layering ? "auto",
      # nixpkgs' experimental partitioner: a list of [ op args… ], or a JSON
      # file holding one. It sets the store layers itself (maxLayers is not
      # applied to them).
      layeringPipeline ? null,
      debug ? false,
      format ? "docker-archive",
      compressor ? "gz",
      # Layer compression of an OCI layout (default: `compressor`'s kind).
      compression ? null,
      rootEntries ? [ ],
      # Layers made with buildLayer: they go first, and the store paths they
      # hold leave the rest of the plan (nix2container's meaning).
      layers ? [ ],
      passthru ? { },
      meta ? { },
      stream ? false,
    }:
    assert layeringPipeline != null || maxLayers > 1 || throw "maxLayers must be at least 2 (the customisation layer takes one)";
    assert !enableFakechroot || throw "enableFakechroot is not supported by nixoci: fakeRootCommands already run in the image's root directory, so write relative paths there (etc/passwd, not /etc/passwd), or declare entries with rootEntries";
    assert builtins.elem format [ "docker-archive" "oci" ] || throw "format must be \"docker-archive\" (nixpkgs' result) or \"oci\" (an OCI layout directory), not \"${format}\"";
    assert compressors ? ${compressor} || throw "compressor must be \"gz\", \"zstd\" or \"none\", not \"${compressor}\"";
    assert layers == [ ] || (format == "oci" && !stream) || throw "layers (buildLayer) are compressed blobs: use format = \"oci\"";
    let
      baseName = baseNameOf name;
      contentsList = map toString (toList contents);
      allExtraCommands = (if includeNixDB then nixDbCommands { name = baseName; contents = toList contents; } else "") + extraCommands;
      extra =
        if allExtraCommands == "" && fakeRootCommands == "" then
          null
        else
          customisation { name = baseName; contents = toList contents; extraCommands = allExtraCommands; inherit fakeRootCommands; };
      archive = format == "docker-archive" && !stream;
      compress = compressors.${compressor};
      spec = {
        name = lowerName name;
        # With commands, `contents` arrive merged in their output.
        contents = if extra == null then contentsList else [ ];
        inherit config created mtime maxLayers uid gid uname gname architecture includeStorePaths rootEntries debug;
        layering = layering;
        layeringPipeline = layeringPipeline;
        compression = if compression != null then compression else compress.layers;
        extraRoots = if extra == null then [ ] else [ "${extra}" ];
        excludePaths = if extra == null then [ ] else [ "${extra}" ];
        fromImage = if fromImage == null then null else "${fromImage}";
        layers = map toString layers;
      };
      # Like nixpkgs, an untagged image is tagged by a hash of what it is made of.
      imageTag = if tag != null then tag else builtins.substring 0 32 (builtins.hashString "sha256" (toJSON spec));
      roots =
        if includeStorePaths then
          storePathsIn ({ inherit config rootEntries; } // (if extra == null then { inherit contents; } else { }))
          ++ (if extra == null then [ ] else [ extra ])
        else
          [ ];
      drv = derivation {
        name =
          if stream then "stream-${baseName}"
          else if archive then "${baseName}.tar${compress.ext}"
          else "${baseName}-oci";
        inherit system;
        builder = "${nixoci}/bin/nixoci";
        args =
          if stream then
            [ "nix-helper" "stream-script" "--attrs" ".attrs.json" "-o" (placeholder "out") ]
          else
            [ "build" "--spec" ".attrs.json" "--quiet" "-o" (placeholder "out") ]
            ++ (if archive then [ "--format" "docker-archive" "--archive-compression" compress.archive ] else [ ]);
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
    nixpkgs' dockerTools.buildLayeredImage: a docker-archive file
    (`<name>.tar.gz` by default; `compressor` "gz", "zstd" or "none") for
    `docker load`, `podman load` and `skopeo copy docker-archive:`. With
    `format = "oci"`, an OCI image layout directory instead: registry-ready
    compressed layers, what `nixoci push` and `skopeo copy oci:` take.
  */
  buildLayeredImage =
    args:
    let
      image = mkImage (removeAttrs args [ "stream" ]);
    in
    image // { stream = mkImage ((removeAttrs args [ "stream" "format" "compressor" "compression" ]) // { stream = true; }); };

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
    A multi-platform image: an OCI layout whose index lists `images` (one
    per platform, each a buildLayeredImage result of either format), so that
    each runtime pulls its own. `name` and `tag` default to the first
    image's.
  */
  buildImageIndex =
    {
      images,
      name ? (head images).imageName,
      tag ? (head images).imageTag,
    }:
    derivation {
      name = "${baseNameOf name}-index";
      inherit system;
      builder = "${nixoci}/bin/nixoci";
      args = [ "index" ] ++ map toString images ++ [ "--tag" "${lowerName name}:${tag}" "-o" (placeholder "out") ];
    }
    // {
      imageName = lowerName name;
      imageTag = tag;
    };

  /**
    The Entrypoint list for nixoci-entrypoint: mirror `links` (real
    directories, a symlink per file), set `env`, then exec `exec` with the
    container's arguments appended. The config's store paths join the closure.
  */
  mkEntrypoint =
    # env: set whatever the pod says; defaultEnv: set only where the pod's
    # environment does not set the variable.
    { links ? [ ], env ? { }, defaultEnv ? { }, exec }:
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
        entrypoint = { inherit links env; default_env = defaultEnv; exec = toList exec; };
      };
    in
    [ "${wrapper}/bin/nixoci-entrypoint" "${configFile}" ];

  inherit storePathsIn;
}
