# Puts the Go client generated from this version's schema in place of the
# one go.sum names. Skipped inside the fixed-output goModules derivation, so
# that vendorHash covers upstream's modules only.
authentikApiGoVendor() {
  if [ -n "${outputHash-}" ]; then return 0; fi
  # buildGoModule copies vendor/ from the store with its read-only modes.
  chmod u+w vendor
  if [ -d vendor/goauthentik.io ]; then chmod -R u+w vendor/goauthentik.io; fi
  rm -rf vendor/goauthentik.io/api/v3
  mkdir -p vendor/goauthentik.io/api
  cp -r @client@ vendor/goauthentik.io/api/v3
  chmod -R u+w vendor/goauthentik.io/api/v3
}
postConfigureHooks+=(authentikApiGoVendor)
