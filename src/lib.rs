//! nixoci turns Nix store closures into layered, deterministic OCI images.
//!
//! Each module owns one concern: [`nix`] (Nix formats), [`closure`] (the
//! reference graph), [`layering`] (partitioning into layers), [`layer`] (tar
//! and layer blobs), [`image`] (config and manifests), [`output`] (layout and
//! archives), [`spec`] (the build spec), [`build`] (the pipeline) and
//! [`progress`].

pub mod build;
pub mod check;
pub mod closure;
pub mod image;
pub mod layer;
pub mod layering;
pub mod nix;
pub mod output;
pub mod progress;
pub mod registry;
pub mod source;
pub mod spec;
pub mod verify;
