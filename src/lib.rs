//! nixoci turns Nix store closures into layered, deterministic OCI images.
//!
//! Each module owns one concern: [`nix`] (Nix formats: store paths, hashes,
//! NAR, derivation files), [`closure`] (the reference graph), [`layering`]
//! (partitioning into layers), [`layer`] (tar, layer blobs, the layer cache
//! and Nix-built layers), [`media`] (media types, compression and its
//! decoders), [`digest`] (content digests), [`image`] (the `Image` and
//! `Index` model, config and manifests), [`source`] (readers: built images
//! opened as that model), [`output`] (writers: layouts and archives),
//! [`spec`] (the build spec), [`build`] (the pipeline), [`check`] (pre-push
//! checks), [`registry`] (push), [`verify`] (supply-chain pins and
//! provenance), [`sbom`] (bills of materials), [`inspect`] (what is in an
//! image, by store path), [`nixlib`] (the Nix library's
//! build steps) and [`progress`].

pub mod build;
pub mod check;
pub mod closure;
pub mod digest;
pub mod image;
pub mod inspect;
pub mod layer;
pub mod layering;
pub mod media;
pub mod nix;
pub mod nixlib;
pub mod output;
pub mod progress;
pub mod registry;
pub mod sbom;
pub mod sign;
pub mod source;
pub mod spec;
pub mod verify;
