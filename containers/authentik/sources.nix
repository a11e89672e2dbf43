# The sources, every one from the forge mirrors: authentik and its Go
# client at their tags, oci-python (the `opencontainers` package) at its
# commit.
{ fetchgit, pins }:
{
  src = fetchgit {
    url = pins.authentik.mirror;
    inherit (pins.authentik) rev hash;
  };
  client-go-src = fetchgit {
    url = pins.client-go.mirror;
    inherit (pins.client-go) rev hash;
  };
  opencontainers-src = fetchgit {
    url = pins.opencontainers.mirror;
    inherit (pins.opencontainers) rev hash;
  };
}
