//! The OCI distribution vocabulary Berth speaks, as types that can only hold valid values.
//!
//! Everything a client sends is parsed here once, at the edge, into [`RepoName`], [`Tag`],
//! [`Digest`] or [`Reference`]; storage keys can only be built from those types, so nothing
//! further down checks a name again and no input can name a path outside the storage root.
//! [`manifest::Manifest`] parses the four manifest formats a registry stores (OCI image manifest
//! and index, Docker schema 2 manifest and manifest list) just far enough to validate them and
//! list what they reference; the original bytes stay the source of truth.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of HTTP or storage.
#![warn(missing_docs)]

mod digest;
mod error;
pub mod manifest;
pub mod media;
mod name;
mod pattern;

pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::ParseError;
pub use name::{Reference, RepoName, Tag, UploadId};
pub use pattern::RepoPattern;
