//! The arena error type: a hand-written, cheap, `Send + Sync + 'static` error.
//!
//! [`ArenaError`] pairs an [`ErrorKind`] with the file offset at which the problem was found (when
//! there is one). The variants roughly follow the order of the reader's validation algorithm
//! (see `spec/format.md`, "Validation"). Use [`ArenaError::is_incompatible`] to tell a stale or
//! foreign archive ("regenerate quietly") from a damaged one ([`ArenaError::is_corrupt`], "warn").

use core::fmt;

/// What went wrong. Marked `#[non_exhaustive]`: new kinds may be added in minor releases.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is shorter than a structure that must be there (`ARENA-HDR-001`).
    TooShort {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        got: u64,
    },
    /// The first 8 bytes are not the arena magic (`ARENA-HDR-002`).
    BadMagic,
    /// The major format version is not supported by this reader (`ARENA-HDR-003`). Incompatible.
    UnsupportedVersion {
        /// Major version found in the file.
        major: u16,
        /// Minor version found in the file.
        minor: u16,
    },
    /// The file sets incompatible-feature flags this reader does not know (`ARENA-HDR-004`).
    /// Incompatible.
    UnknownIncompatFlags(u32),
    /// `header_len` is not 128 (`ARENA-HDR-005`).
    BadHeaderLen(u32),
    /// The header CRC does not match (`ARENA-HDR-006`).
    HeaderChecksum {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the header.
        actual: u32,
    },
    /// `file_len` in the header differs from the actual length (`ARENA-HDR-007`).
    LengthMismatch {
        /// Length recorded in the header.
        header: u64,
        /// Actual length of the input.
        actual: u64,
    },
    /// A reserved field or padding byte is not zero (`ARENA-HDR-008`, `ARENA-SEC-005`, ...).
    ReservedNonZero {
        /// Which field or padding area.
        field: &'static str,
    },
    /// A region does not sit where the layout rules say it must (`ARENA-LAY-*`, `ARENA-SEC-004`).
    BadLayout {
        /// Which field.
        field: &'static str,
    },
    /// A range `[offset, offset + len)` does not fit inside `limit` (or overflows).
    OutOfBounds {
        /// What the range describes.
        what: &'static str,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The bound it must stay within.
        limit: u64,
    },
    /// A value that must be a multiple of `align` is not.
    Misaligned {
        /// What the value describes.
        what: &'static str,
        /// The offending value.
        value: u64,
        /// Required alignment.
        align: u64,
    },
    /// Two regions that must be disjoint overlap (or are out of order).
    Overlap {
        /// What overlaps.
        what: &'static str,
    },
    /// A section's CRC (or, with `section == 0`, the section table's CRC) does not match.
    TableChecksum {
        /// Section kind (0 = the section table itself).
        section: u32,
        /// Stored CRC.
        expected: u32,
        /// Computed CRC.
        actual: u32,
    },
    /// A required section is missing from the section table (`ARENA-SEC-003`).
    MissingSection {
        /// Section kind.
        section: u32,
    },
    /// A section's length is not a whole number of entries (`ARENA-SEC-007`).
    BadTableLen {
        /// Section kind.
        section: u32,
        /// Its length in bytes.
        len: u64,
    },
    /// A span's dependency list is not strictly increasing or names a span that is not lower
    /// (`ARENA-TAB-004`).
    BadDependency {
        /// The span.
        span: u32,
        /// The offending dependency id.
        dep: u32,
    },
    /// A span's bitmaps have the wrong length, or padding bits are set (`ARENA-TAB-005`,
    /// `ARENA-SPAN-002`).
    BadBitmap {
        /// The span.
        span: u32,
    },
    /// The producer string is not UTF-8 (`ARENA-TAB-009`).
    BadUtf8,
    /// The producer string is longer than 255 bytes (`ARENA-TAB-009`).
    ProducerTooLong {
        /// Its length in bytes.
        len: u64,
    },
    /// Two roots have the same name, or roots are not sorted by name (`ARENA-TAB-008`).
    DuplicateRoot,
    /// The archive's profile differs from the one the client expects. Incompatible.
    ProfileMismatch,
    /// A span's CRC does not match (`ARENA-SPAN-001`).
    SpanChecksum {
        /// The span.
        span: u32,
        /// Stored CRC.
        expected: u32,
        /// Computed CRC.
        actual: u32,
    },
    /// A slot is invalid: marked both internal and external, or an internal target outside the
    /// span and its dependencies (`ARENA-SPAN-003`, `ARENA-SPAN-004`).
    BadSlot {
        /// The span.
        span: u32,
        /// Base-relative offset of the slot.
        slot: u64,
        /// The value stored in the slot.
        value: u64,
    },
    /// An external slot holds an id `>= extern_count` (`ARENA-SPAN-005`).
    BadExternId {
        /// The span.
        span: u32,
        /// Base-relative offset of the slot.
        slot: u64,
        /// The id stored in the slot.
        id: u64,
    },
    /// The client's resolver returned address 0 for an extern.
    UnresolvedExtern {
        /// The extern id.
        id: u32,
    },
    /// The span failed to load earlier (or depends on one that did); it never loads.
    SpanFailed {
        /// The span.
        span: u32,
    },
    /// The span was given back with [`crate::LoadedArena::release_span`]; it never loads again.
    SpanReleased {
        /// The span.
        span: u32,
    },
    /// There is no span with this id.
    NoSuchSpan {
        /// The requested id.
        span: u32,
    },
    /// Span contents are not available through this [`crate::Archive`] (the archive of a
    /// [`crate::LoadedArena`] covers only the header and tables; use `load_span`).
    HeapUnavailable,
    /// `load_span` was called from inside a `check` or `resolve` callback of the same arena.
    Reentrant,
    /// The path does not name a regular file (FIFO, directory, device, ...).
    NotRegularFile,
    /// The builder was misused in a way only detectable at `finish` (open span, bad target, ...).
    InvalidInput {
        /// What was wrong.
        what: &'static str,
    },
    /// The archive would exceed a format limit (e.g. a pool larger than 4 GiB).
    TooLarge {
        /// What is too large.
        what: &'static str,
    },
    /// An I/O error.
    Io(std::io::Error),
}

/// An error from building, validating or loading an arena.
#[derive(Debug)]
#[non_exhaustive]
pub struct ArenaError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The file offset (from byte 0) the error refers to, when there is one.
    pub offset: Option<u64>,
}

impl ArenaError {
    /// An error of `kind` at `offset`.
    pub fn new(kind: ErrorKind, offset: Option<u64>) -> Self {
        ArenaError { kind, offset }
    }

    /// An error of `kind` at file offset `offset`.
    pub(crate) fn at(kind: ErrorKind, offset: u64) -> Self {
        ArenaError {
            kind,
            offset: Some(offset),
        }
    }

    /// An error of `kind` without an offset.
    pub(crate) fn kind_only(kind: ErrorKind) -> Self {
        ArenaError { kind, offset: None }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The file offset the error refers to, if any.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// True if the archive is well-formed as far as this reader can tell but was made for another
    /// format version, feature set or profile: a stale or foreign cache, to be regenerated quietly.
    pub fn is_incompatible(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::UnsupportedVersion { .. }
                | ErrorKind::UnknownIncompatFlags(_)
                | ErrorKind::ProfileMismatch
        )
    }

    /// True if the archive bytes are damaged or malformed (truncated, bad checksum, bad offsets...).
    ///
    /// Neither this nor [`is_incompatible`](Self::is_incompatible) holds for I/O errors, client
    /// errors, misuse ([`ErrorKind::NotRegularFile`], [`ErrorKind::Reentrant`], ...) and
    /// [`ErrorKind::SpanFailed`] (whose first error said why).
    pub fn is_corrupt(&self) -> bool {
        use ErrorKind::*;
        match self.kind {
            TooShort { .. }
            | BadMagic
            | BadHeaderLen(_)
            | HeaderChecksum { .. }
            | LengthMismatch { .. }
            | ReservedNonZero { .. }
            | BadLayout { .. }
            | OutOfBounds { .. }
            | Misaligned { .. }
            | Overlap { .. }
            | TableChecksum { .. }
            | MissingSection { .. }
            | BadTableLen { .. }
            | BadDependency { .. }
            | BadBitmap { .. }
            | BadUtf8
            | ProducerTooLong { .. }
            | DuplicateRoot
            | SpanChecksum { .. }
            | BadSlot { .. }
            | BadExternId { .. } => true,
            UnsupportedVersion { .. }
            | UnknownIncompatFlags(_)
            | ProfileMismatch
            | UnresolvedExtern { .. }
            | SpanFailed { .. }
            | SpanReleased { .. }
            | NoSuchSpan { .. }
            | HeapUnavailable
            | Reentrant
            | NotRegularFile
            | InvalidInput { .. }
            | TooLarge { .. }
            | Io(_) => false,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            TooShort { needed, got } => write!(f, "input too short: need {needed} bytes, got {got}"),
            BadMagic => f.write_str("not an arena file (bad magic)"),
            UnsupportedVersion { major, minor } => {
                write!(f, "unsupported arena format version {major}.{minor}")
            }
            UnknownIncompatFlags(flags) => {
                write!(f, "unknown incompatible feature flags {flags:#010x}")
            }
            BadHeaderLen(len) => write!(f, "bad header length {len} (expected 128)"),
            HeaderChecksum { expected, actual } => write!(
                f,
                "header checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
            LengthMismatch { header, actual } => write!(
                f,
                "file length mismatch: header says {header} bytes, actual {actual}"
            ),
            ReservedNonZero { field } => write!(f, "reserved bytes not zero in {field}"),
            BadLayout { field } => write!(f, "bad layout: {field}"),
            OutOfBounds {
                what,
                offset,
                len,
                limit,
            } => write!(
                f,
                "{what} out of bounds: [{offset:#x}, +{len:#x}) exceeds {limit:#x}"
            ),
            Misaligned { what, value, align } => {
                write!(f, "{what} misaligned: {value:#x} is not a multiple of {align}")
            }
            Overlap { what } => write!(f, "overlapping or unordered regions: {what}"),
            TableChecksum {
                section,
                expected,
                actual,
            } => write!(
                f,
                "checksum mismatch in section {section}: stored {expected:#010x}, computed {actual:#010x}"
            ),
            MissingSection { section } => write!(f, "required section {section} missing"),
            BadTableLen { section, len } => write!(
                f,
                "section {section} length {len} is not a whole number of entries"
            ),
            BadDependency { span, dep } => write!(f, "span {span} has invalid dependency {dep}"),
            BadBitmap { span } => write!(f, "span {span} has a malformed slot bitmap"),
            BadUtf8 => f.write_str("producer string is not UTF-8"),
            ProducerTooLong { len } => {
                write!(f, "producer string is {len} bytes (at most 255 allowed)")
            }
            DuplicateRoot => f.write_str("duplicate or unsorted root names"),
            ProfileMismatch => f.write_str("archive profile does not match"),
            SpanChecksum {
                span,
                expected,
                actual,
            } => write!(
                f,
                "span {span} checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
            BadSlot { span, slot, value } => write!(
                f,
                "span {span}: invalid slot at {slot:#x} (value {value:#x})"
            ),
            BadExternId { span, slot, id } => {
                write!(f, "span {span}: slot at {slot:#x} has invalid extern id {id}")
            }
            UnresolvedExtern { id } => write!(f, "extern {id} resolved to address 0"),
            SpanFailed { span } => write!(f, "span {span} failed to load earlier"),
            SpanReleased { span } => write!(f, "span {span} was released"),
            NoSuchSpan { span } => write!(f, "no span with id {span}"),
            HeapUnavailable => f.write_str("span contents are not available through this archive view"),
            Reentrant => f.write_str("load_span called re-entrantly from a callback"),
            NotRegularFile => f.write_str("not a regular file"),
            InvalidInput { what } => write!(f, "invalid builder input: {what}"),
            TooLarge { what } => write!(f, "format limit exceeded: {what}"),
            Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl fmt::Display for ArenaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)?;
        if let Some(off) = self.offset {
            write!(f, " (at offset {off:#x})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ArenaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ArenaError {
    fn from(e: std::io::Error) -> Self {
        ArenaError::kind_only(ErrorKind::Io(e))
    }
}

impl From<ErrorKind> for ArenaError {
    fn from(kind: ErrorKind) -> Self {
        ArenaError::kind_only(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync_static::<ArenaError>();
    }

    #[test]
    fn display_includes_offset() {
        let e = ArenaError::at(ErrorKind::BadMagic, 0x10);
        assert_eq!(
            e.to_string(),
            "not an arena file (bad magic) (at offset 0x10)"
        );
        assert!(e.is_corrupt());
        assert!(!e.is_incompatible());
    }

    #[test]
    fn classification() {
        let v = ArenaError::from(ErrorKind::UnsupportedVersion { major: 2, minor: 0 });
        assert!(v.is_incompatible() && !v.is_corrupt());
        let p = ArenaError::from(ErrorKind::ProfileMismatch);
        assert!(p.is_incompatible() && !p.is_corrupt());
        let f = ArenaError::from(ErrorKind::UnknownIncompatFlags(4));
        assert!(f.is_incompatible());
        let io = ArenaError::from(std::io::Error::other("x"));
        assert!(!io.is_incompatible() && !io.is_corrupt());
        assert!(std::error::Error::source(&io).is_some());
    }
}
