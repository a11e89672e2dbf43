{
  description = "nixoci: layered, deterministic OCI images from Nix closures, and the tools to ship them";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      # Our users run x86_64 hosts (k3s) and arm64 ones (minikube on a Mac).
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
      pkgsFor = system: import nixpkgs {
        inherit system;
        overlays = [ self.overlays.default ];
      };
      # The systems mirrors/authentik.toml pins every per-platform fixed
      # output for (npm's native packages, the compiled Python
      # environment): only those can be built.
      authentikPins = builtins.fromTOML (builtins.readFile ./mirrors/authentik.toml);
      perPlatformFods = builtins.filter (f: f ? system) (authentikPins.fod or [ ]);
      pinnedFor = system: name:
        builtins.any (f: f.name == name && f.system == system) perPlatformFods;
      authentikSystems = builtins.filter
        (system: perPlatformFods != [ ]
          && builtins.all (f: pinnedFor system f.name) perPlatformFods)
        systems;
      # Built only from the sources mirrors/authentik.toml pins.
      authentikFor = system:
        let p = pkgsFor system; in
        import ./containers/authentik {
          pkgs = p;
          inherit system;
          inherit (p) nixoci nixoci-entrypoint nixociLib;
        };
      pkgs = pkgsFor "x86_64-linux";
    in
    {
      overlays.default = final: prev: {
        nixoci = final.callPackage ./nix/package.nix { };
        nixoci-entrypoint = (final.pkgsStatic or final).callPackage ./nix/entrypoint.nix { };
        nixociLib = import ./nix {
          inherit (final) nixoci nixoci-entrypoint;
          pkgs = final;
          system = final.system or prev.system;
        };
      };

      lib = pkgs.nixociLib;

      packages = forSystems (system:
        let p = pkgsFor system; in
        {
          inherit (p) nixoci nixoci-entrypoint;
          default = p.nixoci;
        }
        // (if builtins.elem system authentikSystems then { authentik-image = authentikFor system; } else { })
        // (if system == "x86_64-linux" && builtins.length authentikSystems > 1 then {
          # Every pinned platform under one tag (building it needs a builder
          # for each).
          authentik-index = p.nixociLib.buildImageIndex {
            images = map authentikFor authentikSystems;
          };
        } else { }));

      checks = forSystems (system: removeAttrs self.packages.${system} [ "default" "authentik-index" ]);

      devShells.x86_64-linux.default = pkgs.mkShell {
        packages = [ pkgs.cargo pkgs.rustc pkgs.skopeo pkgs.nixoci ];
      };

      apps.x86_64-linux.push = {
        type = "app";
        program = "${pkgs.writeShellScript "nixoci-push" ''exec ${pkgs.nixoci}/bin/nixoci push "$@"''}";
      };
    };
}
