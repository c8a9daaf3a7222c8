//! The write side: [`ArenaBuilder`] lays out spans of objects in a heap, records slots, roots and
//! metadata, and produces deterministic archive bytes ([`ArenaBuilder::finish`]) or publishes them
//! atomically ([`ArenaBuilder::write_atomic`]).
//!
//! Builder misuse that is a plain programming error (allocating with no open span, a slot outside
//! the open span, ...) panics; problems that depend on the data (duplicate root names, a producer
//! string that is too long, an internal target outside the allowed spans, ...) are reported by
//! `finish` as an [`ArenaError`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::error::{ArenaError, ErrorKind};
use crate::layout::{
    self, ExternEntry, Header, RootEntry, SectionEntry, SpanEntry, FORMAT_MAJOR, FORMAT_MINOR,
    HEADER_LEN, HEAP_START, MAGIC, MAX_PRODUCER_LEN, REQUIRED_SECTIONS,
};

/// Identifies a span: its index in the archive's span table (spans are numbered in the order they
/// are begun, from 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct SpanId(pub u32);

/// Identifies an extern: its index in the archive's extern table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ExternId(pub u32);

#[derive(Debug)]
struct OpenSpan {
    start: u64,
    deps: Vec<u32>,
    internal: Vec<u64>,
    external: Vec<u64>,
}

#[derive(Debug)]
struct BuiltSpan {
    start: u64,
    len: u64,
    deps: Vec<u32>,
    internal: Vec<u64>,
    external: Vec<u64>,
    meta: Vec<u8>,
}

#[derive(Debug)]
struct BuiltRoot {
    name: Vec<u8>,
    object: u64,
    span: SpanId,
    meta: Vec<u8>,
}

/// Builds an archive in memory. Output bytes depend only on the sequence of calls.
#[derive(Debug)]
pub struct ArenaBuilder {
    profile: [u8; 32],
    producer: String,
    archive_meta: Vec<u8>,
    preferred_base: u64,
    /// Heap bytes; `heap[i]` is at base-relative offset `HEAP_START + i`.
    heap: Vec<u8>,
    extern_names: Vec<Vec<u8>>,
    extern_index: HashMap<Vec<u8>, u32>,
    spans: Vec<BuiltSpan>,
    open: Option<OpenSpan>,
    roots: Vec<BuiltRoot>,
    /// First data-dependent error, reported by `finish`.
    error: Option<ArenaError>,
}

fn to_usize(x: u64) -> usize {
    usize::try_from(x).expect("offset exceeds the address space")
}

fn set_bit(words: &mut Vec<u64>, index: u64) {
    let w = to_usize(index / 64);
    if words.len() <= w {
        words.resize(w + 1, 0);
    }
    words[w] |= 1u64 << (index % 64);
}

fn clear_bit(words: &mut [u64], index: u64) {
    if let Some(w) = words.get_mut(to_usize(index / 64)) {
        *w &= !(1u64 << (index % 64));
    }
}

fn u32_len(n: usize, what: &'static str) -> Result<u32, ArenaError> {
    u32::try_from(n).map_err(|_| ArenaError::from(ErrorKind::TooLarge { what }))
}

impl ArenaBuilder {
    /// A new, empty builder for an archive with the given client `profile`.
    pub fn new(profile: [u8; 32]) -> Self {
        ArenaBuilder {
            profile,
            producer: String::new(),
            archive_meta: Vec::new(),
            preferred_base: 0,
            heap: Vec::new(),
            extern_names: Vec::new(),
            extern_index: HashMap::new(),
            spans: Vec::new(),
            open: None,
            roots: Vec::new(),
            error: None,
        }
    }

    fn record_error(&mut self, e: ArenaError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Sets the producer string (at most 255 bytes of UTF-8; `finish` fails otherwise).
    pub fn set_producer(&mut self, producer: &str) {
        self.producer = producer.to_owned();
    }

    /// Sets the archive-level client metadata bytes.
    pub fn set_archive_meta(&mut self, bytes: &[u8]) {
        self.archive_meta = bytes.to_vec();
    }

    /// Sets the advisory preferred load address recorded in the header (0 = none).
    pub fn set_preferred_base(&mut self, addr: u64) {
        self.preferred_base = addr;
    }

    /// The id of the extern called `name`, allocating a new id on first use (ids are dense, from 0,
    /// in order of first use; names are de-duplicated).
    pub fn extern_id(&mut self, name: &[u8]) -> ExternId {
        if let Some(&id) = self.extern_index.get(name) {
            return ExternId(id);
        }
        let id = match u32::try_from(self.extern_names.len()) {
            Ok(id) => id,
            Err(_) => {
                self.record_error(
                    ErrorKind::TooLarge {
                        what: "extern count",
                    }
                    .into(),
                );
                u32::MAX
            }
        };
        self.extern_names.push(name.to_vec());
        self.extern_index.insert(name.to_vec(), id);
        ExternId(id)
    }

    fn cur_end(&self) -> u64 {
        HEAP_START + self.heap.len() as u64
    }

    /// Opens a new span depending on `deps` (any order, duplicates ignored) and returns its id.
    ///
    /// # Panics
    /// If a span is already open, or a dependency is not an already finished span.
    pub fn begin_span(&mut self, deps: &[SpanId]) -> SpanId {
        assert!(self.open.is_none(), "begin_span: a span is already open");
        let id = u32::try_from(self.spans.len()).expect("too many spans");
        let mut deps: Vec<u32> = deps.iter().map(|d| d.0).collect();
        deps.sort_unstable();
        deps.dedup();
        for &d in &deps {
            assert!(d < id, "begin_span: dependency {d} is not a finished span");
        }
        self.open = Some(OpenSpan {
            start: self.cur_end(),
            deps,
            internal: Vec::new(),
            external: Vec::new(),
        });
        SpanId(id)
    }

    fn open_span(&self) -> &OpenSpan {
        self.open.as_ref().expect("no span is open")
    }

    /// Reserves `size` zero bytes aligned to `align` in the open span and returns their
    /// base-relative offset. Alignment is relative to the file start; the loaders place the file
    /// start on a page boundary, so alignments up to the page size hold in memory too.
    ///
    /// # Panics
    /// If no span is open, or `align` is not a power of two. Alignments below 8 are raised to 8.
    pub fn alloc(&mut self, size: usize, align: usize) -> u64 {
        let _ = self.open_span();
        assert!(
            align.is_power_of_two(),
            "alloc: align must be a power of two"
        );
        let align = (align as u64).max(8);
        let off = self
            .cur_end()
            .checked_next_multiple_of(align)
            .expect("alloc: offset overflow");
        let end = off
            .checked_add(size as u64)
            .expect("alloc: offset overflow");
        self.heap.resize(to_usize(end - HEAP_START), 0);
        off
    }

    /// The bytes `[offset, offset + len)` of the open span, for filling in objects.
    ///
    /// # Panics
    /// If no span is open or the range is not inside the open span's allocated bytes.
    pub fn bytes_mut(&mut self, offset: u64, len: usize) -> &mut [u8] {
        let start = self.open_span().start;
        let end = offset.checked_add(len as u64).expect("bytes_mut: overflow");
        assert!(
            offset >= start && end <= self.cur_end(),
            "bytes_mut: range outside the open span"
        );
        let i = to_usize(offset - HEAP_START);
        &mut self.heap[i..i + len]
    }

    fn slot_index(&self, slot: u64) -> u64 {
        let span = self.open_span();
        assert!(slot % 8 == 0, "slot {slot:#x} is not 8-aligned");
        assert!(
            slot >= span.start && slot + 8 <= self.cur_end(),
            "slot {slot:#x} is outside the open span"
        );
        (slot - span.start) / 8
    }

    fn write_word(&mut self, slot: u64, value: u64) {
        let i = to_usize(slot - HEAP_START);
        self.heap[i..i + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Marks the 8-byte word at `slot` as an internal pointer to base-relative `target` (stored in
    /// the word now, relocated to `base + target` at load). The target must lie in the open span
    /// or one of its dependencies by the time the span ends (`finish` fails otherwise).
    ///
    /// # Panics
    /// If `slot` is not 8-aligned or not inside the open span's allocated bytes.
    pub fn set_internal(&mut self, slot: u64, target: u64) {
        let idx = self.slot_index(slot);
        self.write_word(slot, target);
        let span = self.open.as_mut().expect("no span is open");
        set_bit(&mut span.internal, idx);
        clear_bit(&mut span.external, idx);
    }

    /// Marks the 8-byte word at `slot` as a reference to extern `id` (the id is stored in the
    /// word now; the loader replaces it with the address the client resolves).
    ///
    /// # Panics
    /// If `slot` is not 8-aligned or not inside the open span's allocated bytes.
    pub fn set_external(&mut self, slot: u64, id: ExternId) {
        let idx = self.slot_index(slot);
        self.write_word(slot, u64::from(id.0));
        let span = self.open.as_mut().expect("no span is open");
        set_bit(&mut span.external, idx);
        clear_bit(&mut span.internal, idx);
    }

    /// Closes the open span (padding it with zeros to a multiple of 8) with client `meta` bytes.
    ///
    /// # Panics
    /// If no span is open.
    pub fn end_span(&mut self, meta: &[u8]) -> SpanId {
        let open = self.open.take().expect("end_span: no span is open");
        let id = SpanId(u32::try_from(self.spans.len()).expect("too many spans"));
        let padded = self.heap.len().next_multiple_of(8);
        self.heap.resize(padded, 0);
        let end = self.cur_end();
        let len = end - open.start;
        let words = to_usize(layout::bitmap_len(len) / 8);
        let OpenSpan {
            start,
            deps,
            mut internal,
            mut external,
        } = open;
        internal.resize(words, 0);
        external.resize(words, 0);
        // Check internal targets (own span or a direct dependency).
        let mut bad = None;
        for (wi, &w) in internal.iter().enumerate() {
            let mut bits = w;
            while bits != 0 {
                let bit = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let slot = start + 8 * (wi as u64 * 64 + bit);
                let i = to_usize(slot - HEAP_START);
                let mut word = [0u8; 8];
                word.copy_from_slice(&self.heap[i..i + 8]);
                let target = u64::from_le_bytes(word);
                let ok = (start..end).contains(&target)
                    || deps.iter().any(|&d| {
                        let s = &self.spans[d as usize];
                        (s.start..s.start + s.len).contains(&target)
                    });
                if !ok && bad.is_none() {
                    bad = Some(slot);
                }
            }
        }
        if let Some(slot) = bad {
            self.record_error(ArenaError::at(
                ErrorKind::InvalidInput {
                    what: "internal slot target outside its span and dependencies",
                },
                slot,
            ));
        }
        self.spans.push(BuiltSpan {
            start,
            len,
            deps,
            internal,
            external,
            meta: meta.to_vec(),
        });
        id
    }

    /// Adds a named root: `object` (base-relative, inside `span`) with client `meta` bytes.
    /// Duplicate names make `finish` fail.
    pub fn add_root(&mut self, name: &[u8], object: u64, span: SpanId, meta: &[u8]) {
        self.roots.push(BuiltRoot {
            name: name.to_vec(),
            object,
            span,
            meta: meta.to_vec(),
        });
    }

    /// Current heap length in bytes (the heap starts at base-relative offset 128).
    pub fn heap_len(&self) -> u64 {
        self.heap.len() as u64
    }

    /// Lays out the archive and returns its bytes. Same calls -> same bytes.
    pub fn finish(self) -> Result<Vec<u8>, ArenaError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.open.is_some() {
            return Err(ErrorKind::InvalidInput {
                what: "a span is still open",
            }
            .into());
        }
        if self.producer.len() > MAX_PRODUCER_LEN {
            return Err(ErrorKind::ProducerTooLong {
                len: self.producer.len() as u64,
            }
            .into());
        }
        let mut roots = self.roots;
        for r in &roots {
            let span = self
                .spans
                .get(r.span.0 as usize)
                .ok_or(ErrorKind::InvalidInput {
                    what: "root refers to an unknown span",
                })?;
            if !(span.start..span.start + span.len).contains(&r.object) {
                return Err(ArenaError::at(
                    ErrorKind::InvalidInput {
                        what: "root object outside its span",
                    },
                    r.object,
                ));
            }
        }
        roots.sort_by(|a, b| a.name.cmp(&b.name));
        if roots.windows(2).any(|w| w[0].name == w[1].name) {
            return Err(ErrorKind::DuplicateRoot.into());
        }
        let extern_count = self.extern_names.len() as u64;

        // Pools and tables.
        let mut strings: Vec<u8> = Vec::new();
        let mut externs: Vec<ExternEntry> = Vec::with_capacity(self.extern_names.len());
        for name in &self.extern_names {
            externs.push(ExternEntry {
                name_off: U32::new(u32_len(strings.len(), "string pool")?),
                name_len: U32::new(u32_len(name.len(), "extern name")?),
            });
            strings.extend_from_slice(name);
        }
        let mut meta_pool: Vec<u8> = Vec::new();
        let mut deps_pool: Vec<U32> = Vec::new();
        let mut bitmaps: Vec<u8> = Vec::new();
        let mut spans: Vec<SpanEntry> = Vec::with_capacity(self.spans.len());
        for s in &self.spans {
            let heap_bytes =
                &self.heap[to_usize(s.start - HEAP_START)..to_usize(s.start - HEAP_START + s.len)];
            // External ids must be known.
            for (wi, &w) in s.external.iter().enumerate() {
                let mut bits = w;
                while bits != 0 {
                    let bit = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let rel = to_usize(8 * (wi as u64 * 64 + bit));
                    let mut word = [0u8; 8];
                    word.copy_from_slice(&heap_bytes[rel..rel + 8]);
                    if u64::from_le_bytes(word) >= extern_count {
                        return Err(ArenaError::at(
                            ErrorKind::InvalidInput {
                                what: "external slot holds an unknown extern id",
                            },
                            s.start + rel as u64,
                        ));
                    }
                }
            }
            let bitmap_off = bitmaps.len() as u64;
            let int_bytes: Vec<u8> = s.internal.iter().flat_map(|w| w.to_le_bytes()).collect();
            let ext_bytes: Vec<u8> = s.external.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut h = crc32fast::Hasher::new();
            h.update(heap_bytes);
            h.update(&int_bytes);
            h.update(&ext_bytes);
            h.update(&s.meta);
            bitmaps.extend_from_slice(&int_bytes);
            bitmaps.extend_from_slice(&ext_bytes);
            spans.push(SpanEntry {
                start: U64::new(s.start),
                len: U64::new(s.len),
                bitmap_off: U64::new(bitmap_off),
                bitmap_len: U64::new(int_bytes.len() as u64),
                deps_off: U32::new(u32_len(deps_pool.len(), "dependency table")?),
                deps_count: U32::new(u32_len(s.deps.len(), "dependency list")?),
                meta_off: U32::new(u32_len(meta_pool.len(), "meta pool")?),
                meta_len: U32::new(u32_len(s.meta.len(), "span meta")?),
                crc: U32::new(h.finalize()),
                reserved: U32::new(0),
            });
            deps_pool.extend(s.deps.iter().map(|&d| U32::new(d)));
            meta_pool.extend_from_slice(&s.meta);
        }
        let mut root_entries: Vec<RootEntry> = Vec::with_capacity(roots.len());
        for r in &roots {
            root_entries.push(RootEntry {
                name_off: U32::new(u32_len(strings.len(), "string pool")?),
                name_len: U32::new(u32_len(r.name.len(), "root name")?),
                object: U64::new(r.object),
                span: U32::new(r.span.0),
                meta_off: U32::new(u32_len(meta_pool.len(), "meta pool")?),
                meta_len: U32::new(u32_len(r.meta.len(), "root meta")?),
                reserved: U32::new(0),
            });
            strings.extend_from_slice(&r.name);
            meta_pool.extend_from_slice(&r.meta);
        }
        // Pools are referenced with u32 offsets; make sure their ends fit too.
        u32_len(strings.len(), "string pool")?;
        u32_len(meta_pool.len(), "meta pool")?;
        u32_len(deps_pool.len(), "dependency table")?;
        u32_len(spans.len(), "span count")?;
        u32_len(root_entries.len(), "root count")?;

        let sections: [(u32, &[u8]); 9] = [
            (layout::SECTION_STRINGS, &strings),
            (layout::SECTION_EXTERNS, externs.as_bytes()),
            (layout::SECTION_SPANS, spans.as_bytes()),
            (layout::SECTION_DEPS, deps_pool.as_bytes()),
            (layout::SECTION_ROOTS, root_entries.as_bytes()),
            (layout::SECTION_BITMAPS, &bitmaps),
            (layout::SECTION_META, &meta_pool),
            (layout::SECTION_PRODUCER, self.producer.as_bytes()),
            (layout::SECTION_ARCHIVE_META, &self.archive_meta),
        ];
        debug_assert!(sections
            .iter()
            .map(|s| s.0)
            .eq(REQUIRED_SECTIONS.iter().copied()));

        let heap_len = self.heap.len() as u64;
        let tables_start = HEAP_START + heap_len;
        let table_len = layout::SECTION_ENTRY_LEN * sections.len() as u64;
        let mut out: Vec<u8> = vec![0; HEADER_LEN];
        out.extend_from_slice(&self.heap);
        out.resize(to_usize(tables_start + table_len), 0);
        let mut entries: Vec<SectionEntry> = Vec::with_capacity(sections.len());
        for (kind, bytes) in sections {
            out.resize(out.len().next_multiple_of(8), 0);
            entries.push(SectionEntry {
                kind: U32::new(kind),
                crc: U32::new(layout::crc32(bytes)),
                offset: U64::new(out.len() as u64),
                len: U64::new(bytes.len() as u64),
            });
            out.extend_from_slice(bytes);
        }
        out.resize(out.len().next_multiple_of(8), 0);
        let table_bytes = entries.as_bytes();
        let ts = to_usize(tables_start);
        out[ts..ts + table_bytes.len()].copy_from_slice(table_bytes);
        let file_len = out.len() as u64;

        let mut header = Header::new_zeroed();
        header.magic = MAGIC;
        header.format_major = U16::new(FORMAT_MAJOR);
        header.format_minor = U16::new(FORMAT_MINOR);
        header.header_len = U32::new(HEADER_LEN as u32);
        header.file_len = U64::new(file_len);
        header.profile = self.profile;
        header.preferred_base = U64::new(self.preferred_base);
        header.heap_start = U64::new(HEAP_START);
        header.heap_len = U64::new(heap_len);
        header.tables_start = U64::new(tables_start);
        header.tables_len = U64::new(file_len - tables_start);
        header.section_table_offset = U64::new(tables_start);
        header.section_count = U32::new(sections.len() as u32);
        header.section_table_crc = U32::new(layout::crc32(table_bytes));
        header.header_crc = U32::new(layout::header_crc(&header));
        out[..HEADER_LEN].copy_from_slice(header.as_bytes());
        Ok(out)
    }

    /// Finishes the archive and publishes it at `path` atomically: the bytes go to a new temporary
    /// file in the same directory (unique name), which is fsynced and renamed over `path`; then the
    /// directory is fsynced. The target is never opened for writing, so a process that mapped the
    /// old file keeps seeing the old, unchanged inode. On any error the temporary file is removed
    /// and `path` is left as it was. Returns the number of bytes written.
    pub fn write_atomic(self, path: &Path) -> Result<u64, ArenaError> {
        let bytes = self.finish()?;
        publish(&bytes, path)?;
        Ok(bytes.len() as u64)
    }
}

/// Publishes finished archive `bytes` (from [`ArenaBuilder::finish`], e.g. after checking
/// them) at `path` atomically, as [`ArenaBuilder::write_atomic`] does.
pub fn publish(bytes: &[u8], path: &Path) -> Result<(), ArenaError> {
    write_atomic_with(bytes, path, &mut |f, b| f.write_all(b))
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> Result<(PathBuf, PathBuf), ArenaError> {
    let name = path.file_name().ok_or(ErrorKind::InvalidInput {
        what: "write_atomic: path has no file name",
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{}.{:08x}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    ));
    Ok((dir.join(tmp_name), dir))
}

/// The publishing protocol behind [`ArenaBuilder::write_atomic`], with the data write pluggable
/// so tests can inject failures.
pub(crate) fn write_atomic_with(
    bytes: &[u8],
    path: &Path,
    write: &mut dyn FnMut(&mut File, &[u8]) -> std::io::Result<()>,
) -> Result<(), ArenaError> {
    let (tmp, dir) = temp_path(path)?;
    // Readable by all, writable by the owner only (whatever the umask adds): an archive may
    // be code to its readers, who may refuse files that others can write.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    let result = (|| -> std::io::Result<()> {
        write(&mut file, bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    // The rename is done; make it durable. A failure here is reported but the new file is in place.
    File::open(&dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArenaBuilder {
        let mut b = ArenaBuilder::new([7; 32]);
        b.set_producer("test");
        let s = b.begin_span(&[]);
        let o = b.alloc(16, 8);
        b.set_internal(o, o + 8);
        b.end_span(b"m");
        b.add_root(b"r", o, s, b"");
        b
    }

    #[test]
    fn deterministic() {
        assert_eq!(sample().finish().unwrap(), sample().finish().unwrap());
    }

    #[test]
    fn failed_write_keeps_old_file_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.arena");
        fs::write(&target, b"old contents").unwrap();
        let bytes = sample().finish().unwrap();
        let err = write_atomic_with(&bytes, &target, &mut |f, b| {
            f.write_all(&b[..10])?;
            Err(std::io::Error::other("injected failure"))
        })
        .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Io(_)));
        assert_eq!(fs::read(&target).unwrap(), b"old contents");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.arena")]);
    }

    #[test]
    fn producer_too_long() {
        let mut b = ArenaBuilder::new([0; 32]);
        b.set_producer(&"x".repeat(256));
        assert!(matches!(
            b.finish().unwrap_err().kind,
            ErrorKind::ProducerTooLong { len: 256 }
        ));
    }

    #[test]
    fn duplicate_root() {
        let mut b = sample();
        b.add_root(b"r", HEAP_START, SpanId(0), b"");
        assert!(matches!(
            b.finish().unwrap_err().kind,
            ErrorKind::DuplicateRoot
        ));
    }

    #[test]
    fn bad_internal_target() {
        let mut b = ArenaBuilder::new([0; 32]);
        b.begin_span(&[]);
        let o = b.alloc(8, 8);
        b.set_internal(o, 4096);
        b.end_span(b"");
        assert!(matches!(
            b.finish().unwrap_err().kind,
            ErrorKind::InvalidInput { .. }
        ));
    }

    #[test]
    fn open_span_at_finish() {
        let mut b = ArenaBuilder::new([0; 32]);
        b.begin_span(&[]);
        assert!(b.finish().is_err());
    }

    #[test]
    fn extern_ids_dedup() {
        let mut b = ArenaBuilder::new([0; 32]);
        let a = b.extern_id(b"a");
        let c = b.extern_id(b"c");
        assert_eq!(b.extern_id(b"a"), a);
        assert_eq!((a, c), (ExternId(0), ExternId(1)));
    }

    #[test]
    fn alloc_alignment() {
        let mut b = ArenaBuilder::new([0; 32]);
        b.begin_span(&[]);
        let a = b.alloc(3, 8);
        assert_eq!(a, HEAP_START);
        let c = b.alloc(1, 64);
        assert_eq!(c % 64, 0);
        let d = b.alloc(1, 1);
        assert_eq!(d % 8, 0);
        b.end_span(b"");
        assert_eq!(b.heap_len() % 8, 0);
    }
}
