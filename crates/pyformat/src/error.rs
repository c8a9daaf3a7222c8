//! Errors of the CPython layer.

use core::fmt;

use pycds_arena::ArenaError;

/// What went wrong while writing or checking CPython objects in an archive.
#[derive(Debug)]
#[non_exhaustive]
pub enum PyFormatError {
    /// The arena layer refused the bytes.
    Arena(ArenaError),
    /// An extern name this version of pycds does not know.
    UnknownExtern {
        /// extern id
        id: u32,
    },
    /// An object in a span is malformed; `offset` is base-relative.
    BadObject {
        /// where the object (or field) is
        offset: u64,
        /// what is wrong
        what: &'static str,
    },
    /// A pointer field or tuple item refers to something of the wrong type.
    BadReference {
        /// the slot
        offset: u64,
        /// what was expected there
        expected: &'static str,
    },
    /// The span's pycds metadata is malformed.
    BadSpanMeta {
        /// what is wrong
        what: &'static str,
    },
    /// A root's metadata is malformed.
    BadRootMeta {
        /// what is wrong
        what: &'static str,
    },
    /// The writer was handed something it cannot store.
    Unsupported {
        /// why
        what: String,
    },
    /// The archive was written for another interpreter build.
    ProfileMismatch {
        /// human-readable list of the fingerprint entries that differ
        differences: String,
    },
    /// The archive was written by the same interpreter build running with other compiler
    /// flags (`-X no_debug_ranges`): its code is not what this process would compile.
    CompilerFlagsMismatch {
        /// human-readable list of the flags that differ
        differences: String,
    },
}

impl PyFormatError {
    /// Whether the archive is fine but made for another interpreter or pycds version
    /// (regenerate quietly) rather than damaged (warn).
    pub fn is_incompatible(&self) -> bool {
        match self {
            PyFormatError::Arena(e) => e.is_incompatible(),
            PyFormatError::ProfileMismatch { .. }
            | PyFormatError::CompilerFlagsMismatch { .. }
            | PyFormatError::UnknownExtern { .. } => true,
            _ => false,
        }
    }
}

impl fmt::Display for PyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyFormatError::Arena(e) => write!(f, "{e}"),
            PyFormatError::UnknownExtern { id } => {
                write!(
                    f,
                    "unknown external reference #{id} (archive from another pycds version?)"
                )
            }
            PyFormatError::BadObject { offset, what } => {
                write!(f, "malformed object at offset {offset:#x}: {what}")
            }
            PyFormatError::BadReference { offset, expected } => {
                write!(
                    f,
                    "reference at offset {offset:#x} does not point to {expected}"
                )
            }
            PyFormatError::BadSpanMeta { what } => write!(f, "malformed module metadata: {what}"),
            PyFormatError::BadRootMeta { what } => write!(f, "malformed root metadata: {what}"),
            PyFormatError::Unsupported { what } => write!(f, "{what}"),
            PyFormatError::ProfileMismatch { differences } => write!(
                f,
                "archive was written by a different interpreter build ({differences})"
            ),
            PyFormatError::CompilerFlagsMismatch { differences } => write!(
                f,
                "archive was dumped with other compiler flags ({differences})"
            ),
        }
    }
}

impl std::error::Error for PyFormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PyFormatError::Arena(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ArenaError> for PyFormatError {
    fn from(e: ArenaError) -> Self {
        PyFormatError::Arena(e)
    }
}
