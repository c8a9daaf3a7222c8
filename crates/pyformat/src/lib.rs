//! `pycds-pyformat`: CPython 3.11 / 3.12 / 3.13 objects on top of `pycds-arena`.
//!
//! Internal component crate of pycds. Pure Rust (no interpreter needed), so that
//! fuzzers, benches and third-party tools can read and check archives:
//!
//! * [`layout`]: per-version object layouts (checked against the running interpreter by
//!   `pycds-pyhook` before use);
//! * [`write::PyArchiveWriter`]: writes code, tuple, str, bytes, int, float, complex and
//!   frozenset constants in the interpreter's in-memory layout, runtime caches reset;
//! * [`check::Checker`]: the structural check of a span before the interpreter sees it,
//!   producing the load-time fix-up plan (frozensets to build, code objects);
//! * [`plan::Planner`]: the same plan for a span whose objects are trusted (checked when
//!   the archive was written), from its metadata and slot bitmaps only;
//! * [`profile::Fingerprint`]: which interpreter build an archive belongs to.
//!
//! The format is specified in `spec/python-profile.md`.
#![forbid(unsafe_code)]

pub mod check;
pub mod error;
pub mod externs;
pub mod layout;
pub mod meta;
pub mod plan;
pub mod profile;
pub mod write;

pub use check::{Checker, SpanPlan};
pub use error::PyFormatError;
pub use externs::{ExternKind, ExternTable, TypeTag};
pub use layout::{Layout, PyVersion};
pub use plan::Planner;
pub use profile::Fingerprint;
pub use write::{ObjRef, PyArchiveWriter, StrData};
