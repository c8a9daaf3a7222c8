//! Errors of the CPython side and their Python exception classes.

use pycds_arena::ArenaError;
use pycds_pyformat::PyFormatError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    pycds,
    PycdsError,
    PyException,
    "Base class of every error pycds raises."
);
create_exception!(
    pycds,
    CorruptArchiveError,
    PycdsError,
    "The archive is damaged: truncated, bit flips, malformed tables or objects."
);
create_exception!(
    pycds,
    IncompatibleArchiveError,
    PycdsError,
    "The archive is intact but belongs to another interpreter build or pycds format version."
);
create_exception!(
    pycds,
    CompilerFlagsMismatch,
    IncompatibleArchiveError,
    "The archive was dumped by this interpreter running with other compiler flags (-X no_debug_ranges); the import hook falls back quietly."
);
create_exception!(
    pycds,
    UnsupportedObjectError,
    PycdsError,
    "An object of a type pycds cannot archive (the message names the root and the path)."
);
create_exception!(
    pycds,
    UnsupportedInterpreterError,
    PycdsError,
    "The running interpreter is not one pycds supports (debug, free-threaded, other version, sub-interpreter)."
);

/// Errors of the hook crate.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Archive-level failure.
    #[error("{0}")]
    Arena(#[from] ArenaError),
    /// Object-level failure.
    #[error("{0}")]
    Format(#[from] PyFormatError),
    /// Something cannot be archived.
    #[error("root {root:?}: {path}: {what}")]
    Unsupported {
        /// root name
        root: String,
        /// path to the object inside the root
        path: String,
        /// why
        what: String,
    },
    /// The interpreter is not supported.
    #[error("{0}")]
    Interpreter(String),
    /// A file that other users can change, refused where its content is trusted as code.
    #[error("{0}")]
    Insecure(String),
    /// A Python exception.
    #[error("{0}")]
    Python(#[from] PyErr),
    /// Another error, about the file at `path`.
    #[error("{path}: {source}")]
    At {
        /// the archive file
        path: String,
        /// what went wrong
        source: Box<HookError>,
    },
}

/// Result alias.
pub type HookResult<T> = Result<T, HookError>;

impl HookError {
    /// Whether the archive is intact but for another build / format version.
    pub fn is_incompatible(&self) -> bool {
        match self {
            HookError::At { source, .. } => source.is_incompatible(),
            HookError::Arena(e) => e.is_incompatible(),
            HookError::Format(e) => e.is_incompatible(),
            _ => false,
        }
    }
}

impl HookError {
    /// The same error, saying which file it is about.
    pub fn at(self, path: &std::path::Path) -> HookError {
        HookError::At {
            path: path.display().to_string(),
            source: Box::new(self),
        }
    }

    fn innermost(&self) -> &HookError {
        match self {
            HookError::At { source, .. } => source.innermost(),
            e => e,
        }
    }
}

impl From<HookError> for PyErr {
    fn from(e: HookError) -> PyErr {
        let msg = e.to_string();
        match e.innermost() {
            HookError::Unsupported { .. } => UnsupportedObjectError::new_err(msg),
            HookError::Interpreter(_) => UnsupportedInterpreterError::new_err(msg),
            HookError::Insecure(_) => PycdsError::new_err(msg),
            HookError::Arena(a) | HookError::Format(PyFormatError::Arena(a))
                if matches!(
                    a.kind(),
                    pycds_arena::ErrorKind::Io(_) | pycds_arena::ErrorKind::NotRegularFile
                ) =>
            {
                PycdsError::new_err(msg)
            }
            HookError::Format(PyFormatError::CompilerFlagsMismatch { .. }) => {
                CompilerFlagsMismatch::new_err(msg)
            }
            _ if e.is_incompatible() => IncompatibleArchiveError::new_err(msg),
            _ => match e {
                HookError::Python(p) => p,
                _ => CorruptArchiveError::new_err(msg),
            },
        }
    }
}
