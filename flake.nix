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
      };

      lib = import ./nix {
        inherit (pkgs) nixoci nixoci-entrypoint;
        inherit pkgs system;
      };

      packages.${system} = {
        inherit (pkgs) nixoci nixoci-entrypoint;
        # Built only from the sources mirrors/authentik.toml pins.
        authentik-image = import ./containers/authentik {
          inherit pkgs system;
          inherit (pkgs) nixoci nixoci-entrypoint;
          nixociLib = self.lib;
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
