{
  description = "nixoci: layered, deterministic OCI images from Nix closures, and the tools to ship them";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = import nixpkgs {
        inherit system;
        overlays = [ self.overlays.default ];
      };
      # The authentik source as pinned in mirrors/authentik.toml (no hash is written twice).
      pins = builtins.fromTOML (builtins.readFile ./mirrors/authentik.toml);
      authentikPin = builtins.head (builtins.filter (s: s.name == "authentik") pins.source);
    in
    {
      overlays.default = final: prev: {
        nixoci = final.callPackage ./nix/package.nix { };
        nixoci-entrypoint = (final.pkgsStatic or final).callPackage ./nix/entrypoint.nix { };
        nixociLib = import ./nix {
          inherit (final) nixoci nixoci-entrypoint;
          pkgs = final;
          inherit system;
        };
        # authentik built from our mirror at the pinned tag and hash.
        authentik-mirrored = prev.authentik.overrideAttrs (_: {
          src = final.fetchgit {
            url = authentikPin.mirror;
            rev = authentikPin.rev;
            hash = authentikPin.hash;
          };
        });
      };

      lib = import ./nix {
        inherit (pkgs) nixoci nixoci-entrypoint;
        inherit pkgs system;
      };

      packages.${system} = {
        inherit (pkgs) nixoci nixoci-entrypoint;
        authentik-image = import ./containers/authentik {
          inherit pkgs system;
          inherit (pkgs) nixoci nixoci-entrypoint;
          nixociLib = self.lib;
          ak = pkgs.authentik-mirrored;
          parts = import ./nix/authentik-parts.nix {
            authentik = pkgs.authentik-mirrored;
            inherit (pkgs) bash coreutils;
            inherit system;
          };
        };
        default = pkgs.nixoci;
      };

      checks.${system} = {
        inherit (self.packages.${system}) nixoci nixoci-entrypoint authentik-image;
      };

      devShells.${system}.default = pkgs.mkShell {
        packages = [ pkgs.cargo pkgs.rustc pkgs.skopeo pkgs.nixoci ];
      };

      apps.${system}.push = {
        type = "app";
        program = "${pkgs.writeShellScript "nixoci-push" ''exec ${pkgs.nixoci}/bin/nixoci push "$@"''}";
      };
    };
}
