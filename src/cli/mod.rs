//! The subcommands: each module holds one command's arguments and the run
//! function that hands them to the library.

pub(crate) mod build;
pub(crate) mod cache;
pub(crate) mod check;
pub(crate) mod diff;
pub(crate) mod hash;
pub(crate) mod index;
pub(crate) mod inspect;
pub(crate) mod key;
pub(crate) mod nix_helper;
pub(crate) mod pins;
pub(crate) mod plan;
pub(crate) mod push;
pub(crate) mod registry;
pub(crate) mod sbom;
pub(crate) mod sign;
pub(crate) mod tags;
pub(crate) mod verify;
pub(crate) mod verify_image;
