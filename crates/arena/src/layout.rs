//! On-disk structures of format version 1.0 (see `spec/format.md`).
//!
//! Every structure is `#[repr(C)]`, made only of byte arrays and explicitly little-endian integers
//! (`zerocopy::byteorder::little_endian`), so it has alignment 1, no padding, and can be viewed in
//! place over any byte slice with `zerocopy` without `unsafe` code. Offsets called
//! *base-relative* count from byte 0 of the file.
//!
//! ```text
//! [header: 128 bytes][heap: heap_len bytes][tables: tables_len bytes]
//! tables = [section table: section_count * 24 bytes][section]...  (each section 8-aligned)
//! ```

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The 8 magic bytes at offset 0: `\x89 A R E N A \r \n`.
pub const MAGIC: [u8; 8] = *b"\x89ARENA\r\n";
/// Major format version written and read by this crate. Readers reject other majors.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor format version written by this crate. Readers accept any minor of a known major.
pub const FORMAT_MINOR: u16 = 0;
/// Size of the header in bytes (the value of `header_len`).
pub const HEADER_LEN: usize = 128;
/// Base-relative offset of the first heap byte (the heap follows the header directly).
pub const HEAP_START: u64 = 128;
/// Incompatible-feature flags known to this reader (none in 1.0): any other bit set -> reject.
pub const KNOWN_INCOMPAT_FLAGS: u32 = 0;
/// Compatible-feature flags defined so far (none in 1.0); unknown bits are ignored by readers.
pub const KNOWN_COMPAT_FLAGS: u32 = 0;
/// Maximum length of the producer string in bytes.
pub const MAX_PRODUCER_LEN: usize = 255;
/// Alignment (in bytes) of heap objects' base offsets, spans, and sections.
pub const ALIGN: u64 = 8;
/// Byte offset of `header_crc` inside the header (zeroed while the header CRC is computed).
pub const HEADER_CRC_OFFSET: usize = 120;

/// Section kind 0 is never used in the table; errors use it to denote the section table itself.
pub const SECTION_TABLE: u32 = 0;
/// Section kind: string pool (extern names, root names).
pub const SECTION_STRINGS: u32 = 1;
/// Section kind: array of [`ExternEntry`].
pub const SECTION_EXTERNS: u32 = 2;
/// Section kind: array of [`SpanEntry`].
pub const SECTION_SPANS: u32 = 3;
/// Section kind: array of little-endian `u32` span ids (dependency lists).
pub const SECTION_DEPS: u32 = 4;
/// Section kind: array of [`RootEntry`], sorted by name.
pub const SECTION_ROOTS: u32 = 5;
/// Section kind: slot bitmaps (little-endian `u64` words).
pub const SECTION_BITMAPS: u32 = 6;
/// Section kind: client metadata byte pool (span and root meta).
pub const SECTION_META: u32 = 7;
/// Section kind: producer string (UTF-8, at most 255 bytes).
pub const SECTION_PRODUCER: u32 = 8;
/// Section kind: archive-level client metadata bytes.
pub const SECTION_ARCHIVE_META: u32 = 9;
/// The section kinds every version-1 archive has, in table order.
pub const REQUIRED_SECTIONS: [u32; 9] = [
    SECTION_STRINGS,
    SECTION_EXTERNS,
    SECTION_SPANS,
    SECTION_DEPS,
    SECTION_ROOTS,
    SECTION_BITMAPS,
    SECTION_META,
    SECTION_PRODUCER,
    SECTION_ARCHIVE_META,
];

/// The fixed 128-byte file header at offset 0.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// Offset 0: [`MAGIC`].
    pub magic: [u8; 8],
    /// Offset 8: major format version ([`FORMAT_MAJOR`]).
    pub format_major: U16,
    /// Offset 10: minor format version.
    pub format_minor: U16,
    /// Offset 12: header length, always 128.
    pub header_len: U32,
    /// Offset 16: total file length in bytes.
    pub file_len: U64,
    /// Offset 24: incompatible-feature flags (unknown bit -> reject).
    pub incompat_flags: U32,
    /// Offset 28: compatible-feature flags (unknown bits ignored).
    pub compat_flags: U32,
    /// Offset 32: opaque client profile (e.g. interpreter identity).
    pub profile: [u8; 32],
    /// Offset 64: advisory preferred load address (0 = none).
    pub preferred_base: U64,
    /// Offset 72: base-relative start of the heap (= 128).
    pub heap_start: U64,
    /// Offset 80: heap length (multiple of 8).
    pub heap_len: U64,
    /// Offset 88: base-relative start of the tables region (= heap_start + heap_len).
    pub tables_start: U64,
    /// Offset 96: tables region length (tables_start + tables_len = file_len).
    pub tables_len: U64,
    /// Offset 104: base-relative offset of the section table (= tables_start).
    pub section_table_offset: U64,
    /// Offset 112: number of section table entries.
    pub section_count: U32,
    /// Offset 116: CRC-32 of the section table bytes.
    pub section_table_crc: U32,
    /// Offset 120: CRC-32 of the 128 header bytes with this field zeroed.
    pub header_crc: U32,
    /// Offset 124: reserved, must be zero.
    pub reserved: [u8; 4],
}

/// One section table entry (24 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SectionEntry {
    /// Section kind (`SECTION_*`); entries are sorted strictly by kind.
    pub kind: U32,
    /// CRC-32 of the section's bytes.
    pub crc: U32,
    /// Base-relative offset of the section (multiple of 8).
    pub offset: U64,
    /// Length of the section in bytes.
    pub len: U64,
}

/// One EXTERNS entry (8 bytes): the name of extern id = entry index.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ExternEntry {
    /// Offset of the name inside the STRINGS section.
    pub name_off: U32,
    /// Length of the name in bytes.
    pub name_len: U32,
}

/// One SPANS entry (56 bytes): span id = entry index.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SpanEntry {
    /// Base-relative start of the span's heap bytes (multiple of 8).
    pub start: U64,
    /// Length of the span's heap bytes (multiple of 8).
    pub len: U64,
    /// Offset inside the BITMAPS section of the internal bitmap (multiple of 8); the external
    /// bitmap follows it directly.
    pub bitmap_off: U64,
    /// Length in bytes of ONE bitmap: `8 * ceil(len / 8 / 64)`.
    pub bitmap_len: U64,
    /// Index of the first dependency in the DEPS array.
    pub deps_off: U32,
    /// Number of dependencies.
    pub deps_count: U32,
    /// Offset of the span's meta bytes inside the META section.
    pub meta_off: U32,
    /// Length of the span's meta bytes.
    pub meta_len: U32,
    /// CRC-32 over heap bytes, internal bitmap, external bitmap, meta bytes (in that order).
    pub crc: U32,
    /// Reserved, must be zero.
    pub reserved: U32,
}

/// One ROOTS entry (32 bytes). Entries are sorted strictly by name bytes.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RootEntry {
    /// Offset of the name inside the STRINGS section.
    pub name_off: U32,
    /// Length of the name in bytes.
    pub name_len: U32,
    /// Base-relative offset of the root object (inside its span).
    pub object: U64,
    /// Span id holding the object.
    pub span: U32,
    /// Offset of the root's meta bytes inside the META section.
    pub meta_off: U32,
    /// Length of the root's meta bytes.
    pub meta_len: U32,
    /// Reserved, must be zero.
    pub reserved: U32,
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);
const _: () = assert!(core::mem::size_of::<SectionEntry>() == 24);
const _: () = assert!(core::mem::size_of::<ExternEntry>() == 8);
const _: () = assert!(core::mem::size_of::<SpanEntry>() == 56);
const _: () = assert!(core::mem::size_of::<RootEntry>() == 32);
const _: () = assert!(core::mem::offset_of!(Header, header_crc) == HEADER_CRC_OFFSET);

/// Size in bytes of a [`SectionEntry`].
pub const SECTION_ENTRY_LEN: u64 = 24;

/// CRC-32/ISO-HDLC (the checksum used everywhere in the format; what `crc32fast` computes).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The header CRC: CRC-32 of the 128 header bytes with `header_crc` (bytes 120..124) zeroed.
pub fn header_crc(header: &Header) -> u32 {
    let mut copy = *header;
    copy.header_crc = U32::new(0);
    crc32(copy.as_bytes())
}

/// Length in bytes of one slot bitmap of a span of `span_len` heap bytes:
/// one bit per 8-byte word, rounded up to whole little-endian `u64` words.
pub fn bitmap_len(span_len: u64) -> u64 {
    (span_len / 8).div_ceil(64) * 8
}

/// Rounds `x` up to a multiple of 8, or `None` on overflow.
pub fn align8(x: u64) -> Option<u64> {
    x.checked_add(7).map(|v| v & !7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn header_roundtrip() {
        let mut h = Header::new_zeroed();
        h.magic = MAGIC;
        h.format_major = U16::new(1);
        h.file_len = U64::new(0x0102_0304_0506_0708);
        let bytes = h.as_bytes();
        assert_eq!(bytes.len(), 128);
        assert_eq!(&bytes[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        let (back, rest) = Header::ref_from_prefix(bytes).expect("parse");
        assert!(rest.is_empty());
        assert_eq!(back.file_len.get(), 0x0102_0304_0506_0708);
        h.header_crc = U32::new(header_crc(&h));
        assert_eq!(
            header_crc(&h),
            h.header_crc.get(),
            "crc ignores its own field"
        );
    }

    #[test]
    fn bitmap_len_rounds_to_words() {
        assert_eq!(bitmap_len(0), 0);
        assert_eq!(bitmap_len(8), 8);
        assert_eq!(bitmap_len(512), 8);
        assert_eq!(bitmap_len(520), 16);
    }

    #[test]
    fn crc_is_iso_hdlc() {
        // The standard CRC-32 check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
