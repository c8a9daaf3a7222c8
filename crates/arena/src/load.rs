//! In-place loading: [`LoadedArena`] holds an archive in writable private memory and loads
//! (verifies, relocates, resolves) spans on demand.
//!
//! `unsafe` is allowed in this module only, because it is where the crate maps files
//! (`memmap2::MmapOptions::map_copy`), keeps a `'static` view of the tables inside the mapping it
//! owns, writes relocated words into spans through a pointer to that mapping, and declares the
//! arena `Send + Sync`. Every `unsafe` block carries a `// SAFETY:` comment naming each
//! precondition and where it is established.
#![allow(unsafe_code)]
#![deny(clippy::indexing_slicing)]

use core::cell::Cell;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use memmap2::{MmapMut, MmapOptions};
use zerocopy::FromBytes;

use crate::error::{ArenaError, ErrorKind};
use crate::layout::{self, Header, HEADER_LEN, SECTION_ENTRY_LEN};
use crate::read::{for_each_slot, try_for_each_slot, Archive, SpanView};
use crate::validate;
use crate::write::{ExternId, SpanId};

/// How [`LoadedArena::open`] brings the file into memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoadStrategy {
    /// Map the whole file private copy-on-write (`MAP_PRIVATE`, `PROT_READ | PROT_WRITE`).
    /// Untouched pages come from the page cache; relocated pages become private copies.
    ///
    /// # Safety contract (of the whole process, not of a call)
    /// The mapped file must not be truncated or modified in place while the arena is alive:
    /// truncation makes accesses fault (`SIGBUS`), in-place modification may change bytes that
    /// were already validated. Publish archives only with [`crate::ArenaBuilder::write_atomic`]
    /// (write a temporary file, fsync, rename): a rename never changes an inode that is mapped.
    Map,
    /// Reserve anonymous private memory for the whole file (untouched pages cost nothing), read
    /// header and tables at open, except the BITMAPS section (2 bits per heap word), and `pread`
    /// each span's heap bytes into place on first use (and its bitmap pair into a buffer of the
    /// process heap, dropped once the span is relocated, so BITMAPS never becomes resident),
    /// before checking the span CRC (which covers both). A file truncated or rewritten in place
    /// later yields an I/O or checksum error, never a fault.
    Read,
}

const UNVERIFIED: u8 = 0;
const LOADING: u8 = 1;
const LOADED: u8 = 2;
const FAILED: u8 = 3;
const RELEASED: u8 = 4;

/// Extern states (`LoadedArena::ext_states`): not resolved yet (its cell holds its table
/// entry), listed for resolution by the relocation in progress (same), resolved (its cell holds
/// the address).
const EXT_UNRESOLVED: u8 = 0;
const EXT_PENDING: u8 = 1;
const EXT_RESOLVED: u8 = 2;

/// An extern's table entry as kept in its cell until it is resolved: `name_off | name_len << 32`.
fn entry_cell(e: &layout::ExternEntry) -> u64 {
    u64::from(e.name_off.get()) | u64::from(e.name_len.get()) << 32
}

/// `(name_off, name_len)` of a cell made by [`entry_cell`].
fn cell_entry(v: u64) -> (u32, u32) {
    ((v & 0xffff_ffff) as u32, (v >> 32) as u32)
}

thread_local! {
    /// Address of the arena whose load lock this thread holds (0 = none): detects re-entrant
    /// `load_span` calls from callbacks, which would otherwise deadlock.
    static ACTIVE: Cell<usize> = const { Cell::new(0) };
}

/// Why [`LoadedArena::load_span`] failed: the arena's own checks, or the client's callback.
#[derive(Debug)]
pub enum LoadError<E> {
    /// Validation, I/O or state error from the arena.
    Arena(ArenaError),
    /// Error returned by the client's `check` or `resolve` callback.
    Client(E),
}

impl<E> From<ArenaError> for LoadError<E> {
    fn from(e: ArenaError) -> Self {
        LoadError::Arena(e)
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Arena(e) => fmt::Display::fmt(e, f),
            LoadError::Client(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Arena(e) => Some(e),
            LoadError::Client(e) => Some(e),
        }
    }
}

#[derive(Debug)]
enum Source {
    /// Everything was copied in by `from_bytes`.
    Memory,
    /// Private file mapping; the file is kept open so the inode stays fixed.
    Map {
        /// Kept open so the mapped inode stays pinned for the arena's lifetime.
        _file: File,
    },
    /// Anonymous reservation; spans are read from the file on first use.
    Read(File),
}

/// An archive in writable private memory that stays mapped as long as the value lives (use
/// [`LoadedArena::leak`] when loaded objects must live for the rest of the process).
///
/// The header and tables are validated at open; span contents are verified and relocated on
/// first use by [`LoadedArena::load_span`]. `Send + Sync`: spans may be loaded from any thread.
pub struct LoadedArena {
    // INVARIANTS:
    // - `base` points to byte 0 of `mem`, which is `archive.file_len()` bytes long, readable and
    //   writable, and lives (is not unmapped) as long as `self`;
    // - `archive` is `validate_tables` over the tables region of `mem` WITHOUT the BITMAPS
    //   section (the `hole` of `finish`: `archive.bitmaps` is `None`, or BITMAPS is empty); this
    //   crate never writes the tables region outside BITMAPS after construction (clients may only
    //   write inside loaded spans);
    // - `states[i]` is the state of span i; heap bytes of span i are written by this crate only
    //   while it is LOADING, by the thread holding `lock`; once LOADED (Release) they are never
    //   touched again by this crate. Heap ranges of spans are disjoint (ARENA-TAB-002). BITMAPS
    //   is never written (the Read strategy reads bitmap pairs into buffers of its own);
    // - `externs[i]` holds extern i's table entry (`entry_cell`, validated at open) while
    //   `ext_states[i]` is EXT_UNRESOLVED or EXT_PENDING, and the non-zero address resolved for
    //   it once EXT_RESOLVED; both are written under `lock` only;
    // - Read strategy: `archive.externs` is empty (`archive.extern_count` keeps the count) and
    //   the EXTERNS section's whole pages were given back (`externs_on_disk`): nothing reads
    //   that memory after `finish`.
    archive: Archive<'static>,
    /// Read strategy: where the extern names stay in the file (not in memory).
    names: Option<NamesOnDisk>,
    /// Read strategy: where the extern table stays in the file (entries are in `externs`).
    externs_on_disk: Option<TableOnDisk>,
    states: Box<[AtomicU8]>,
    externs: Box<[AtomicU64]>,
    ext_states: Box<[AtomicU8]>,
    lock: Mutex<()>,
    source: Source,
    base: NonNull<u8>,
    mem: MmapMut,
}

// SAFETY: `LoadedArena` is `!Send`/`!Sync` only because of `base: NonNull<u8>`.
// - `base` points into `mem` (an `MmapMut`, itself `Send + Sync`) owned by the same value, so
//   sending the arena to another thread sends the memory with it (INVARIANTS on the struct);
// - all writes this crate performs through `base` happen in `load_span` while holding `lock`, on
//   a span in state LOADING that no other thread reads (its heap bytes; bitmap pairs are never
//   written: the Read strategy reads them into heap buffers), and are published with a Release store of
//   LOADED that readers observe with Acquire (`is_loaded`, `load_span` fast path); the tables
//   region referenced by `archive` is never written by this crate;
// - concurrent mutation of loaded objects by clients goes through raw pointers they derive from
//   `base()`, and is their own synchronization responsibility (documented on `base`).
unsafe impl Send for LoadedArena {}
// SAFETY: see the `Send` impl above: shared access only reads `archive` (immutable tables),
// atomics, and the `Mutex`; heap writes are serialized by `lock` and published by atomics.
unsafe impl Sync for LoadedArena {}

impl fmt::Debug for LoadedArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedArena")
            .field("base", &self.base)
            .field("len", &self.mem.len())
            .field("source", &self.source)
            .field("spans", &self.states.len())
            .finish()
    }
}

/// The section table bytes of `mem` (`section_count * 24` bytes at `tables_start`), if in bounds.
fn section_table<'m>(mem: &'m [u8], header: &Header) -> Option<&'m [u8]> {
    let ts = usize::try_from(header.tables_start.get()).ok()?;
    let len = u64::from(header.section_count.get()).checked_mul(SECTION_ENTRY_LEN)?;
    mem.get(ts..ts.checked_add(usize::try_from(len).ok()?)?)
}

/// The system's page size (0 if unknown).
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0)
}

/// The lowest descriptor number [`out_of_the_way`] moves the archive's descriptor to.
const HIGH_FD: libc::c_int = 512;

/// The same open file on a descriptor numbered [`HIGH_FD`] or above, when possible. The
/// arena keeps its file open for its whole life (to read spans, and to pin the inode); on a
/// low number it would shift the descriptors the host program opens next by one, which
/// programs (and test suites) that reason about descriptor numbers can observe.
fn out_of_the_way(file: File) -> File {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` only reads the valid descriptor `file` owns and
    // returns a new descriptor (or -1); a non-negative result is a fresh descriptor nobody
    // else owns, so `File::from_raw_fd` may take ownership of it. `file` is dropped (closed)
    // afterwards, the duplicate keeps the open file description.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if fd < 0 {
        return file; // e.g. a descriptor limit below HIGH_FD: keep the original
    }
    // SAFETY: see above: `fd` is a new descriptor owned by nothing else.
    unsafe { File::from_raw_fd(fd) }
}

/// Reads file bytes `[from, to)` into the same range of `mem` (nothing if `from >= to`).
fn read_range(file: &File, mem: &mut [u8], from: u64, to: u64) -> Result<(), ArenaError> {
    if from >= to {
        return Ok(());
    }
    let dst = mem
        .get_mut(to_usize(from)?..to_usize(to)?)
        .ok_or(ErrorKind::BadLayout { field: "tables" })?;
    file.read_exact_at(dst, from)?;
    Ok(())
}

fn to_usize(x: u64) -> Result<usize, ArenaError> {
    usize::try_from(x).map_err(|_| {
        ErrorKind::TooLarge {
            what: "file length",
        }
        .into()
    })
}

/// The extern ids a relocation marked [`EXT_PENDING`]; on drop (after success, an error or a
/// panicking resolver) every one still marked goes back to [`EXT_UNRESOLVED`] (its cell still
/// holds its entry: only resolution replaces it), so a later relocation lists it again.
struct Marked<'a> {
    arena: &'a LoadedArena,
    ids: Vec<u32>,
}

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        for &id in &self.ids {
            if let Some(st) = self.arena.ext_states.get(id as usize) {
                let _ = st.compare_exchange(
                    EXT_PENDING,
                    EXT_UNRESOLVED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

/// Sets [`ACTIVE`] for the current thread and restores the previous value on drop.
struct ActiveGuard(usize);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// A span being loaded.
struct Loading {
    span: u32,
    /// Index of the next dependency to load.
    next_dep: usize,
    /// Read strategy: the span's slot bitmap pair, read into the process heap by `begin` for
    /// verification and relocation and dropped with this entry, so the mapping's BITMAPS
    /// section is never touched (never resident, per process). `None` with the Map and
    /// Memory sources, whose bitmaps are read in place.
    bitmaps: Option<Vec<u8>>,
}

/// The spans being loaded (DFS stack); on drop (error or unwinding from a panicking callback)
/// every span still on it is marked FAILED.
struct Pending<'a> {
    states: &'a [AtomicU8],
    stack: Vec<Loading>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        for &Loading { span: id, .. } in &self.stack {
            if let Some(s) = self.states.get(id as usize) {
                s.store(FAILED, Ordering::Release);
            }
        }
    }
}

/// Bytes per checksummed chunk of the extern names left in the file.
const NAME_CHUNK: usize = 256;

/// The extern names the Read strategy leaves in the file: after the STRINGS section's CRC
/// passed at open, the range `[lo, lo + len)` of STRINGS holding every extern name (and no root
/// name) is given back to the system, with a CRC-32 per [`NAME_CHUNK`] bytes, so the names a
/// span needs when it loads are read again, checked against the bytes validated at open.
/// Interned-string names are most of a large archive's tables (W3 on 3.12: 397 of 757 KB);
/// every process would otherwise keep a private copy of names it uses once.
#[derive(Debug)]
struct NamesOnDisk {
    /// File offset of the STRINGS section.
    strings_off: u64,
    /// STRINGS-relative start and length of the range.
    lo: u64,
    len: u64,
    /// CRC-32 of each chunk of the range (the last one may be short).
    crcs: Vec<u32>,
}

/// The extern table the Read strategy leaves in the file once its entries are in the extern
/// cells (each entry is needed only until its extern is resolved): file offset, length and
/// the section CRC checked at open, to read it back when [`LoadedArena::for_each_extern_name`]
/// needs the entry of an extern already resolved.
#[derive(Debug)]
struct TableOnDisk {
    off: u64,
    len: u64,
    crc: u32,
}

impl TableOnDisk {
    /// The EXTERNS section of `header`'s section table in `mem` (`None` if absent).
    fn find(mem: &[u8], header: &Header) -> Option<TableOnDisk> {
        use crate::layout::{SectionEntry, SECTION_EXTERNS};
        let st = section_table(mem, header)?;
        let (off, len) = validate::section_range(header, st, SECTION_EXTERNS)?;
        let crc = <[SectionEntry]>::ref_from_bytes(st)
            .ok()?
            .iter()
            .find(|e| e.kind.get() == SECTION_EXTERNS)?
            .crc
            .get();
        Some(TableOnDisk { off, len, crc })
    }

    /// Reads the table back, checked against the CRC validated at open.
    fn read(&self, file: &File) -> Result<Vec<u8>, ArenaError> {
        let mut buf = vec![0; to_usize(self.len)?];
        file.read_exact_at(&mut buf, self.off)?;
        let actual = layout::crc32(&buf);
        if actual != self.crc {
            return Err(ArenaError::at(
                ErrorKind::TableChecksum {
                    section: layout::SECTION_EXTERNS,
                    expected: self.crc,
                    actual,
                },
                self.off,
            ));
        }
        Ok(buf)
    }
}

/// Names read back from the file: runs of consecutive chunks of [`NamesOnDisk`], back to
/// back in `data` (only the chunks asked for: a buffer spanning every chunk from the first to
/// the last one asked for would be zeroed and faulted in for names never read).
struct NameBuf {
    data: Vec<u8>,
    /// Per run, in increasing order: (STRINGS-relative offset, offset in `data`, length).
    runs: Vec<(u64, usize, usize)>,
}

impl NameBuf {
    fn get(&self, name_off: u64, name_len: u64) -> Option<&[u8]> {
        // The last run starting at or before `name_off` (a name never spans two runs: every
        // chunk it touches was asked for, so they are consecutive).
        let i = self
            .runs
            .partition_point(|r| r.0 <= name_off)
            .checked_sub(1)?;
        let &(at, from, len) = self.runs.get(i)?;
        let rel = usize::try_from(name_off - at).ok()?;
        let end = rel.checked_add(usize::try_from(name_len).ok()?)?;
        if end > len {
            return None;
        }
        self.data.get(from + rel..from + end)
    }
}

impl NamesOnDisk {
    /// Leaves the extern names of the tables just read into `mem` (Read strategy, before
    /// validation) in the file: `None` (keep everything) when the STRINGS CRC fails (validation
    /// then reports it), when an entry is out of bounds, when a root name lies among the extern
    /// names, or when the range is under two pages.
    fn leave_in_file(mem: &mut MmapMut, header: &Header) -> Option<NamesOnDisk> {
        use crate::layout::{ExternEntry, RootEntry, SectionEntry, SECTION_EXTERNS, SECTION_ROOTS};
        let st = section_table(mem, header)?;
        let find = |kind| validate::section_range(header, st, kind);
        let (s_off, s_len) = find(layout::SECTION_STRINGS)?;
        let (e_off, e_len) = find(SECTION_EXTERNS)?;
        let (r_off, r_len) = find(SECTION_ROOTS)?;
        let crc = <[SectionEntry]>::ref_from_bytes(st)
            .ok()?
            .iter()
            .find(|e| e.kind.get() == layout::SECTION_STRINGS)?
            .crc
            .get();
        let get = |off: u64, len: u64| {
            let off = usize::try_from(off).ok()?;
            mem.get(off..off.checked_add(usize::try_from(len).ok()?)?)
        };
        let strings = get(s_off, s_len)?;
        if layout::crc32(strings) != crc {
            return None;
        }
        let externs = <[ExternEntry]>::ref_from_bytes(get(e_off, e_len)?).ok()?;
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for e in externs {
            let (o, l) = (u64::from(e.name_off.get()), u64::from(e.name_len.get()));
            let end = o.checked_add(l).filter(|&end| end <= s_len)?;
            lo = lo.min(o);
            hi = hi.max(end);
        }
        let page = page_size() as u64;
        if page == 0 || hi <= lo || hi - lo < 2 * page {
            return None;
        }
        let roots = <[RootEntry]>::ref_from_bytes(get(r_off, r_len)?).ok()?;
        if roots.iter().any(|r| {
            let o = u64::from(r.name_off.get());
            o < hi && o.saturating_add(u64::from(r.name_len.get())) > lo
        }) {
            return None;
        }
        let range = get(s_off + lo, hi - lo)?;
        let crcs = range.chunks(NAME_CHUNK).map(layout::crc32).collect();
        // Give the whole pages of the range back (anonymous memory: they read as zeros, and
        // nothing reads them: the archive view has no extern names).
        let (from, to) = (
            usize::try_from(s_off + lo)
                .ok()?
                .next_multiple_of(page as usize),
            usize::try_from(s_off + hi).ok()? / page as usize * page as usize,
        );
        if from < to {
            // SAFETY: `[from, to)` lies inside `mem` (inside the STRINGS range checked by
            // `get` above) and `from` is page-aligned (`mem` starts a mapping); `mem` is
            // borrowed mutably, so no reference into it exists; MADV_DONTNEED on private
            // anonymous memory only turns the pages into zero-fill-on-demand ones.
            unsafe {
                libc::madvise(
                    mem.as_mut_ptr().add(from).cast(),
                    to - from,
                    libc::MADV_DONTNEED,
                );
            }
        }
        Some(NamesOnDisk {
            strings_off: s_off,
            lo,
            len: hi - lo,
            crcs,
        })
    }

    /// Reads back the chunks holding the names `[(name_off, name_len)]` (STRINGS-relative,
    /// inside the range: entries validated at open) and checks each chunk's CRC.
    fn read(
        &self,
        file: &File,
        names: impl Iterator<Item = (u64, u64)> + Clone,
    ) -> Result<NameBuf, ArenaError> {
        let chunk = NAME_CHUNK as u64;
        let bad = || {
            ArenaError::kind_only(ErrorKind::BadLayout {
                field: "extern name",
            })
        };
        let mut want: Vec<usize> = Vec::new();
        for (o, l) in names {
            let rel = o.checked_sub(self.lo).ok_or_else(bad)?;
            let last = rel.saturating_add(l.max(1) - 1);
            if last >= self.len && l > 0 {
                return Err(bad());
            }
            for c in rel / chunk..=last.min(self.len.saturating_sub(1)) / chunk {
                want.push(c as usize);
            }
        }
        want.sort_unstable();
        want.dedup();
        let mut buf = NameBuf {
            data: Vec::new(),
            runs: Vec::new(),
        };
        // Runs of consecutive chunks, one read each, appended to `data`.
        let mut i = 0;
        while let Some(&c0) = want.get(i) {
            let (mut j, mut c1) = (i, c0);
            while want.get(j + 1) == Some(&(c1 + 1)) {
                j += 1;
                c1 += 1;
            }
            let from = c0 as u64 * chunk;
            let to = ((c1 as u64 + 1) * chunk).min(self.len);
            let n = to_usize(to - from)?;
            let start = buf.data.len();
            buf.data.resize(start + n, 0);
            let dst = buf.data.get_mut(start..).ok_or_else(bad)?;
            file.read_exact_at(dst, self.strings_off + self.lo + from)?;
            for (k, piece) in dst.chunks(NAME_CHUNK).enumerate() {
                let expected = self.crcs.get(c0 + k).copied().ok_or_else(bad)?;
                let actual = layout::crc32(piece);
                if actual != expected {
                    return Err(ArenaError::at(
                        ErrorKind::TableChecksum {
                            section: layout::SECTION_STRINGS,
                            expected,
                            actual,
                        },
                        self.strings_off + self.lo + from + (k * NAME_CHUNK) as u64,
                    ));
                }
            }
            buf.runs.push((self.lo + from, start, n));
            i = j + 1;
        }
        Ok(buf)
    }
}

impl LoadedArena {
    /// Opens the archive at `path`: refuses anything but a regular file (checked on the opened
    /// descriptor, opened with `O_NONBLOCK` so a FIFO never blocks) before reading, then
    /// validates the header and tables (not span contents).
    ///
    /// # Safety (mapping contract, [`LoadStrategy::Map`] only)
    ///
    /// This function is safe to call, as the API contract requires, but with
    /// [`LoadStrategy::Map`] the caller takes on an obligation the crate cannot check: the file
    /// must not be truncated or modified in place while the arena lives (truncation raises
    /// `SIGBUS` on access; in-place writes may change bytes after validation, which Rust treats as
    /// undefined behaviour for the `&[u8]` views of the tables). pycds discharges it by
    /// publishing archives only with [`crate::ArenaBuilder::write_atomic`] (temp file, fsync,
    /// rename: a rename never changes an inode that is mapped). When the obligation cannot be
    /// met, use [`LoadStrategy::Read`], which has no such contract.
    pub fn open(path: &Path, strategy: LoadStrategy) -> Result<LoadedArena, ArenaError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        let file = out_of_the_way(file);
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(ErrorKind::NotRegularFile.into());
        }
        let size = meta.len();
        if size < HEADER_LEN as u64 {
            return Err(ArenaError::at(
                ErrorKind::TooShort {
                    needed: HEADER_LEN as u64,
                    got: size,
                },
                0,
            ));
        }
        let len = to_usize(size)?;
        match strategy {
            LoadStrategy::Map => {
                // SAFETY: `map_copy` is unsafe because the mapped file could be modified or
                // truncated by others while mapped, which would change or invalidate memory we
                // hand out as immutable/valid.
                // - Modification/truncation: excluded by the contract on `LoadStrategy::Map`,
                //   which callers of `open(.., Map)` accept; pycds publishes archives only via
                //   `write_atomic` (temp file + fsync + rename), and a rename never changes the
                //   inode this descriptor refers to.
                // - Length: `len` is the file's size from `fstat` on this very descriptor (above),
                //   and `len >= 128 > 0`.
                let mut mem = unsafe { MmapOptions::new().len(len).map_copy(&file)? };
                let header = validate::validate_header(&mem, size)?;
                let hole = section_table(&mem, &header)
                    .and_then(|st| validate::bitmaps_section(&header, st));
                let base = NonNull::new(mem.as_mut_ptr()).ok_or(ErrorKind::BadLayout {
                    field: "null mapping",
                })?;
                Self::finish(mem, base, header, Source::Map { _file: file }, hole, None)
            }
            LoadStrategy::Read => {
                let mut mem = MmapMut::map_anon(len)?;
                let hdr = mem.get_mut(..HEADER_LEN).ok_or(ErrorKind::TooShort {
                    needed: HEADER_LEN as u64,
                    got: size,
                })?;
                file.read_exact_at(hdr, 0)?;
                let header = validate::validate_header(&mem, size)?;
                // No MADV_HUGEPAGE: a span's first byte would fault in (and zero) a whole 2 MiB
                // page, so a program using a few modules of a large archive held up to 2 MiB
                // per span it loaded (stdlib-wide archive, 59 modules: RSS 21.4 vs 16.4 MB),
                // for no measurable gain on dense loads (W3: within noise, same PSS).
                // The tables, except the BITMAPS section (its size grows with the heap; span
                // bitmaps are read with their span, in `begin`). First the section table, to
                // find BITMAPS; if it does not fit, read everything and let validation fail.
                let ts = header.tables_start.get();
                let st_end = u64::from(header.section_count.get())
                    .checked_mul(SECTION_ENTRY_LEN)
                    .and_then(|l| ts.checked_add(l))
                    .filter(|&e| e <= size);
                let mut hole = None;
                if let Some(st_end) = st_end {
                    read_range(&file, &mut mem, ts, st_end)?;
                    hole = section_table(&mem, &header)
                        .and_then(|st| validate::bitmaps_section(&header, st));
                }
                let from = st_end.unwrap_or(ts);
                match hole {
                    // `bitmaps_section` guarantees st_end <= off <= off + len <= size.
                    Some((off, len)) => {
                        read_range(&file, &mut mem, from, off)?;
                        read_range(&file, &mut mem, off.saturating_add(len), size)?;
                    }
                    None => read_range(&file, &mut mem, from, size)?,
                }
                let names = NamesOnDisk::leave_in_file(&mut mem, &header);
                let base = NonNull::new(mem.as_mut_ptr()).ok_or(ErrorKind::BadLayout {
                    field: "null mapping",
                })?;
                Self::finish(mem, base, header, Source::Read(file), hole, names)
            }
        }
    }

    /// Validates `bytes` as a complete archive (header and tables) and copies it into a
    /// page-aligned private anonymous mapping.
    pub fn from_bytes(bytes: &[u8]) -> Result<LoadedArena, ArenaError> {
        let archive = Archive::from_bytes(bytes)?;
        let header = *archive.header();
        let mut mem = MmapMut::map_anon(bytes.len())?;
        mem.copy_from_slice(bytes);
        let hole =
            section_table(&mem, &header).and_then(|st| validate::bitmaps_section(&header, st));
        let base = NonNull::new(mem.as_mut_ptr()).ok_or(ErrorKind::BadLayout {
            field: "null mapping",
        })?;
        Self::finish(mem, base, header, Source::Memory, hole, None)
    }

    /// Validates the tables in `mem` except the BITMAPS section, which is at `hole` (file offset,
    /// length; from [`validate::bitmaps_section`]): the archive never views BITMAPS (the Read
    /// strategy never reads it into `mem` at all: span bitmaps go to heap buffers when their
    /// span loads).
    fn finish(
        mem: MmapMut,
        base: NonNull<u8>,
        header: Header,
        source: Source,
        hole: Option<(u64, u64)>,
        names: Option<NamesOnDisk>,
    ) -> Result<LoadedArena, ArenaError> {
        let ts = to_usize(header.tables_start.get())?;
        let tl = to_usize(header.tables_len.get())?;
        if ts.checked_add(tl) != Some(mem.len()) {
            return Err(ErrorKind::BadLayout { field: "tables" }.into());
        }
        // The tables region as `[0, head)` and `[tail_from, tl)` (relative to `ts`), without the
        // hole `[head, tail_from)`. No hole (`None`) only for files that fail validation.
        let bad_hole = || ArenaError::from(ErrorKind::BadLayout { field: "BITMAPS" });
        let (head, hole_len) = match hole {
            Some((off, len)) => {
                let rel = to_usize(off.checked_sub(ts as u64).ok_or_else(bad_hole)?)?;
                let len = to_usize(len)?;
                match rel.checked_add(len) {
                    Some(end) if end <= tl => (rel, Some(len)),
                    _ => return Err(bad_hole()),
                }
            }
            None => (tl, None),
        };
        // `head <= tail_from <= tl`: checked just above.
        let tail_from = head + hole_len.unwrap_or(0);
        // SAFETY: creating `&'static [u8]`s over `[ts, ts + head)` and `[ts + tail_from, ts + tl)`
        // of the mapping requires:
        // - the ranges are inside one allocation and `ts + tl <= isize::MAX`: checked above
        //   (`head <= tail_from <= tl`, `ts + tl == mem.len()`, and `mem` is a successful mapping
        //   of that length);
        // - the bytes are initialized: mapped memory is always initialized (file bytes or zeros);
        // - no mutation while the references live: this crate never writes the tables region (it
        //   writes only span heap bytes, which lie before `tables_start` by ARENA-LAY-003, and the
        //   Read strategy's open, which reads the tables around the hole before this call), and
        //   clients may only write inside loaded spans (contract on `base()`);
        // - the memory outlives the references: `mem` is moved into the returned `LoadedArena`
        //   and unmapped only when it is dropped; the `'static` references are only exposed with
        //   lifetimes bounded by `&self` (`archive()` returns `&Archive<'_>`).
        let (head_bytes, tail_bytes): (&'static [u8], &'static [u8]) = unsafe {
            (
                core::slice::from_raw_parts(base.as_ptr().add(ts).cast_const(), head),
                core::slice::from_raw_parts(
                    base.as_ptr().add(ts + tail_from).cast_const(),
                    tl - tail_from,
                ),
            )
        };
        let tables = validate::TablesBytes {
            head: head_bytes,
            hole: hole_len.map(|l| l as u64),
            tail: tail_bytes,
            strings_verified: names.is_some(),
        };
        let mut archive = validate::validate_tables(header, tables, None)?;
        let read = matches!(source, Source::Read(_));
        archive.extern_names_absent = read;
        // `validate_tables` leaves `bitmaps` at `None` exactly when BITMAPS is the hole; any other
        // outcome means the references above may cover BITMAPS, which the Read strategy never
        // fills (its zeros are not the file's bitmaps).
        if archive.bitmaps.is_some_and(|b| !b.is_empty()) {
            return Err(bad_hole());
        }
        let states = (0..archive.span_count())
            .map(|_| AtomicU8::new(UNVERIFIED))
            .collect();
        // Each extern's entry stays in its cell until the extern is resolved.
        let externs = archive
            .externs
            .iter()
            .map(|e| AtomicU64::new(entry_cell(e)))
            .collect();
        let ext_states = archive
            .externs
            .iter()
            .map(|_| AtomicU8::new(EXT_UNRESOLVED))
            .collect();
        // Read strategy: the table itself is not needed any more; give its pages back.
        let mut externs_on_disk = None;
        if read && !archive.externs.is_empty() {
            let t = TableOnDisk::find(&mem, &header).ok_or(ErrorKind::MissingSection {
                section: layout::SECTION_EXTERNS,
            })?;
            archive.externs = &[];
            let page = page_size();
            let from = to_usize(t.off)?.next_multiple_of(page.max(1));
            let to = to_usize(t.off + t.len)? / page.max(1) * page;
            if page > 0 && from < to {
                // SAFETY: `[from, to)` lies inside the EXTERNS section (validated inside the
                // file, so inside `mem`), and `from` is page-aligned (`base` starts a mapping).
                // No reference to those bytes is used after this call: `archive.externs`, the
                // only view of EXTERNS, was emptied just above, and `head_bytes`/`tail_bytes`
                // are not used any more (the other views they gave `archive` cover other,
                // non-overlapping sections: ARENA-SEC-004). MADV_DONTNEED on private anonymous
                // memory (Read strategy) only turns the pages into zero-fill-on-demand ones.
                unsafe {
                    libc::madvise(
                        base.as_ptr().add(from).cast(),
                        to - from,
                        libc::MADV_DONTNEED,
                    );
                }
            }
            externs_on_disk = Some(t);
        }
        Ok(LoadedArena {
            archive,
            names,
            externs_on_disk,
            states,
            externs,
            ext_states,
            lock: Mutex::new(()),
            source,
            base,
            mem,
        })
    }

    /// The validated header and tables. Its [`Archive::verify_span`] returns
    /// [`ErrorKind::HeapUnavailable`]: spans are verified by [`load_span`](Self::load_span).
    pub fn archive(&self) -> &Archive<'_> {
        &self.archive
    }

    /// The address of file offset 0 in memory (page-aligned): the object at base-relative offset
    /// `o` of a loaded span is at `base() + o`, for both strategies.
    ///
    /// Clients may read and write the heap bytes of spans that [`is_loaded`](Self::is_loaded)
    /// (synchronizing among themselves), and must not write anywhere else (not the header, not
    /// the tables, not spans that are not loaded yet).
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Total length of the archive in memory.
    pub fn len(&self) -> u64 {
        self.mem.len() as u64
    }

    /// Always false (an archive has at least its 128-byte header).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Calls `f` with every extern's id and name, in id order. With
    /// [`LoadStrategy::Read`], which leaves the extern names in the file after checking them at
    /// open (the archive view's [`Archive::extern_name`] is `None` there), they are read again
    /// and checked against the bytes validated at open; otherwise they come from the tables.
    /// The Read strategy also gives the extern table back at open (each entry stays in its
    /// extern's cell until the extern is resolved): once some extern is resolved, the table is
    /// read again too, checked against its CRC validated at open.
    ///
    /// Serialized with loads; [`ErrorKind::Reentrant`] when called from a callback of
    /// [`load_span`](Self::load_span) on the same arena.
    // The callback type is spelled out so the signature matches the API contract.
    #[allow(clippy::type_complexity)]
    pub fn for_each_extern_name<E>(
        &self,
        f: &mut dyn FnMut(ExternId, &[u8]) -> Result<(), E>,
    ) -> Result<(), LoadError<E>> {
        let n = self.archive.extern_count();
        // The entries: in the cells (serialized with loads, which resolve them), or, once an
        // extern is resolved and the Read strategy gave the table back, read back from the file.
        let _locked = self.lock_loads()?;
        let resolved = self
            .ext_states
            .iter()
            .any(|s| s.load(Ordering::Relaxed) == EXT_RESOLVED);
        let table = match (&self.externs_on_disk, &self.source) {
            (Some(t), Source::Read(file)) if resolved => Some(t.read(file)?),
            _ => None,
        };
        let table: &[layout::ExternEntry] = match &table {
            Some(bytes) => <[layout::ExternEntry]>::ref_from_bytes(bytes).map_err(|_| {
                ArenaError::kind_only(ErrorKind::BadLayout {
                    field: "extern table",
                })
            })?,
            None => self.archive.externs,
        };
        let entry = |id: u32| {
            let (o, l) = match table.get(id as usize) {
                Some(e) => (e.name_off.get(), e.name_len.get()),
                None => self
                    .externs
                    .get(id as usize)
                    .map_or((0, 0), |c| cell_entry(c.load(Ordering::Relaxed))),
            };
            (u64::from(o), u64::from(l))
        };
        let read = match (&self.names, &self.source) {
            (Some(names), Source::Read(file)) => Some(names.read(file, (0..n).map(entry))?),
            _ => None,
        };
        for id in 0..n {
            let (o, l) = entry(id);
            let name = match &read {
                Some(buf) => buf.get(o, l),
                None => self.name_in_memory(o, l),
            };
            f(ExternId(id), name.unwrap_or(&[])).map_err(LoadError::Client)?;
        }
        Ok(())
    }

    /// An extern name kept in memory (the STRINGS section), at `(name_off, name_len)` from its
    /// entry (validated at open).
    fn name_in_memory(&self, name_off: u64, name_len: u64) -> Option<&[u8]> {
        validate::pool_get(
            self.archive.strings,
            u32::try_from(name_off).ok()?,
            u32::try_from(name_len).ok()?,
        )
    }

    /// Takes the load lock (and marks this thread as holding it): loads and the extern cells
    /// are serialized. [`ErrorKind::Reentrant`] if this thread already holds it (a callback of
    /// a load in progress).
    fn lock_loads(&self) -> Result<(std::sync::MutexGuard<'_, ()>, ActiveGuard), ArenaError> {
        let me = self as *const LoadedArena as usize;
        let prev = ACTIVE.with(|a| a.get());
        if prev == me {
            return Err(ArenaError::kind_only(ErrorKind::Reentrant));
        }
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        ACTIVE.with(|a| a.set(me));
        Ok((lock, ActiveGuard(prev)))
    }

    /// True once span `id` has been loaded (verified, dependencies loaded, relocated).
    pub fn is_loaded(&self, id: SpanId) -> bool {
        self.states
            .get(id.0 as usize)
            .is_some_and(|s| s.load(Ordering::Acquire) == LOADED)
    }

    /// Loads span `id`: verify it (CRC and slots, as [`Archive::verify_span`]), call
    /// `check(view)` on the still-unrelocated bytes (an `Err` aborts and marks the span failed),
    /// then load its dependencies first (same procedure, same callbacks), then resolve its
    /// externs and write the relocated words: internal slots become `base() + offset`, external
    /// slots the address from `resolve(id, name)`. Relocated words are native-endian `u64`s.
    ///
    /// `resolve` is called at most once per extern id per arena (results are cached), in id
    /// order within a span, and must not return 0 or `u64::MAX` (neither is an address).
    /// Idempotent: `Ok` at once if already loaded; after any failure the span (and every span
    /// that was being loaded with it) fails forever with [`ErrorKind::SpanFailed`].
    /// Loads are serialized per arena; callbacks must not call `load_span` on the same arena for
    /// a span that is not yet loaded ([`ErrorKind::Reentrant`]). Allocates O(1) per span loaded
    /// (with [`LoadStrategy::Read`], a buffer for its slot bitmaps), nothing per object.
    // The callback types are spelled out so the signature matches the API contract.
    #[allow(clippy::type_complexity)]
    pub fn load_span<E>(
        &self,
        id: SpanId,
        check: &mut dyn FnMut(&SpanView<'_>) -> Result<(), E>,
        resolve: &mut dyn FnMut(ExternId, &[u8]) -> Result<u64, E>,
    ) -> Result<(), LoadError<E>> {
        let state = self
            .states
            .get(id.0 as usize)
            .ok_or_else(|| ArenaError::kind_only(ErrorKind::NoSuchSpan { span: id.0 }))?;
        match state.load(Ordering::Acquire) {
            LOADED => return Ok(()),
            FAILED => {
                return Err(ArenaError::kind_only(ErrorKind::SpanFailed { span: id.0 }).into())
            }
            RELEASED => {
                return Err(ArenaError::kind_only(ErrorKind::SpanReleased { span: id.0 }).into())
            }
            _ => {}
        }
        let _locked = self.lock_loads()?;
        self.load_locked(id, check, resolve)
    }

    /// `load_span` with `lock` held: iterative depth-first loading (no recursion, so long
    /// dependency chains cannot overflow the stack).
    // The callback types are spelled out so the signature matches the API contract.
    #[allow(clippy::type_complexity)]
    fn load_locked<E>(
        &self,
        id: SpanId,
        check: &mut dyn FnMut(&SpanView<'_>) -> Result<(), E>,
        resolve: &mut dyn FnMut(ExternId, &[u8]) -> Result<u64, E>,
    ) -> Result<(), LoadError<E>> {
        let mut pending = Pending {
            states: &self.states,
            stack: Vec::new(),
        };
        if !self.begin(id.0, &mut pending, check)? {
            return Ok(());
        }
        while let Some(top) = pending.stack.last_mut() {
            let (sid, next) = (top.span, top.next_dep);
            let entry = self
                .archive
                .span_entry(SpanId(sid))
                .ok_or_else(|| ArenaError::kind_only(ErrorKind::NoSuchSpan { span: sid }))?;
            if let Some(dep) = self.archive.span_deps(entry).get(next) {
                top.next_dep += 1;
                self.begin(dep.0, &mut pending, check)?;
            } else {
                self.relocate(sid, top.bitmaps.as_deref(), resolve)?;
                if let Some(s) = self.states.get(sid as usize) {
                    s.store(LOADED, Ordering::Release);
                }
                pending.stack.pop();
            }
        }
        Ok(())
    }

    /// The span's heap range as `(offset from base, length)` in `usize`.
    fn span_range(&self, sid: u32) -> Result<(usize, usize), ArenaError> {
        let e = self
            .archive
            .span_entry(SpanId(sid))
            .ok_or(ErrorKind::NoSuchSpan { span: sid })?;
        let start = to_usize(e.start.get())?;
        let len = to_usize(e.len.get())?;
        // In bounds of `mem`: spans tile the heap (ARENA-TAB-002), which lies inside the file
        // (ARENA-LAY-002), and `mem.len() == file_len`. Re-checked here so a violated invariant
        // is an error rather than undefined behaviour.
        match start.checked_add(len) {
            Some(end) if end <= self.mem.len() => Ok((start, len)),
            _ => Err(ErrorKind::BadLayout { field: "span" }.into()),
        }
    }

    /// The span's bitmap pair (internal then external bitmap) as `(offset from base, length)` in
    /// `usize`: inside the BITMAPS section (which `archive` does not view) and inside `mem`.
    fn bitmaps_range(&self, sid: u32) -> Result<(usize, usize), ArenaError> {
        let e = self
            .archive
            .span_entry(SpanId(sid))
            .ok_or(ErrorKind::NoSuchSpan { span: sid })?;
        let bad = || ArenaError::from(ErrorKind::BadBitmap { span: sid });
        let (start, len) = self.archive.span_bitmaps_range(e).ok_or_else(bad)?;
        // Inside BITMAPS (ARENA-TAB-005), which lies inside the file (ARENA-SEC-004); re-checked
        // here so a violated invariant is an error rather than undefined behaviour.
        let section_end = self
            .archive
            .bitmaps_offset
            .checked_add(self.archive.bitmaps_len)
            .ok_or_else(bad)?;
        match start.checked_add(len) {
            Some(end)
                if start >= self.archive.bitmaps_offset
                    && end <= section_end
                    && end <= self.mem.len() as u64 =>
            {
                Ok((to_usize(start)?, to_usize(len)?))
            }
            _ => Err(bad()),
        }
    }

    /// Starts loading span `sid` unless already loaded: mark LOADING, push on the stack, read its
    /// bytes and bitmaps (Read strategy), verify, run `check`. Returns whether it was pushed.
    fn begin<E>(
        &self,
        sid: u32,
        pending: &mut Pending<'_>,
        check: &mut dyn FnMut(&SpanView<'_>) -> Result<(), E>,
    ) -> Result<bool, LoadError<E>> {
        let state = self
            .states
            .get(sid as usize)
            .ok_or_else(|| ArenaError::kind_only(ErrorKind::NoSuchSpan { span: sid }))?;
        match state.load(Ordering::Acquire) {
            LOADED => return Ok(false),
            UNVERIFIED => {}
            RELEASED => {
                return Err(ArenaError::kind_only(ErrorKind::SpanReleased { span: sid }).into())
            }
            // FAILED, or LOADING (impossible without a cycle; deps have lower ids).
            _ => return Err(ArenaError::kind_only(ErrorKind::SpanFailed { span: sid }).into()),
        }
        state.store(LOADING, Ordering::Relaxed);
        pending.stack.push(Loading {
            span: sid,
            next_dep: 0,
            bitmaps: None,
        });
        let (start, len) = self.span_range(sid)?;
        #[cfg(target_os = "linux")]
        if let Source::Read(_) = &self.source {
            self.prefault(start, len);
        }
        // SAFETY: creating `&mut [u8]` over `[start, start + len)` of the mapping requires:
        // - in bounds of one live allocation: `span_range` checked `start + len <= mem.len()`,
        //   `base` points to byte 0 of `mem`, which lives as long as `self` (struct INVARIANTS);
        // - initialized: mapped memory always is;
        // - no other reference or access for the slice's lifetime: the span is in state LOADING
        //   (set just above, under `lock`, held by this thread), so this crate touches it only
        //   here and in `relocate`, sequentially; it is not loaded, so clients must not access
        //   it (contract on `base()`); the tables referenced by `archive` lie after the heap
        //   (ARENA-LAY-003) and other spans tile disjoint ranges (ARENA-TAB-002).
        let bytes: &mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(self.base.as_ptr().add(start), len) };
        let (bstart, blen) = self.bitmaps_range(sid)?;
        let mut read = None;
        let bitmaps: &[u8] = if let Source::Read(file) = &self.source {
            file.read_exact_at(bytes, start as u64)
                .map_err(ArenaError::from)?;
            let buf = read.insert(vec![0; blen]);
            file.read_exact_at(buf, bstart as u64)
                .map_err(ArenaError::from)?;
            buf
        } else {
            // SAFETY: a shared `&[u8]` over `[bstart, bstart + blen)` of the mapping: in bounds
            // of `mem` (`bitmaps_range` checked `bstart + blen <= mem.len()`; `base` points to
            // byte 0 of `mem`, which lives as long as `self`), initialized (mapped memory
            // always is), and never mutated: this crate never writes BITMAPS (Map and Memory
            // sources: the file's bytes; disjoint from the heap, the only region it writes)
            // and clients may only write inside loaded spans (contract on `base()`).
            unsafe {
                core::slice::from_raw_parts(self.base.as_ptr().add(bstart).cast_const(), blen)
            }
        };
        let view = self.archive.check_span(SpanId(sid), bytes, bitmaps)?;
        check(&view).map_err(LoadError::Client)?;
        if let Some(top) = pending.stack.last_mut() {
            top.bitmaps = read;
        }
        Ok(true)
    }

    /// Faults in the pages of `[start, start + len)` of the (anonymous, Read strategy) mapping in
    /// one call, `MADV_POPULATE_WRITE` (Linux 5.14+), instead of one page fault per page while
    /// the span is read into it. Best effort: any error (an older kernel) leaves the read to
    /// fault them in.
    #[cfg(target_os = "linux")]
    fn prefault(&self, start: usize, len: usize) {
        let page = page_size();
        if page == 0 || len == 0 {
            return;
        }
        let lo = start / page * page;
        let hi = start
            .saturating_add(len)
            .next_multiple_of(page)
            .min(self.mem.len());
        if hi <= lo {
            return;
        }
        // SAFETY: `[base + lo, base + hi)` lies inside `mem` (`lo <= start`, `hi <= mem.len()`),
        // a live private mapping owned by `self`, and `base + lo` is page-aligned (`base` is the
        // start of a mapping); MADV_POPULATE_WRITE only allocates the pages (zero-filled
        // anonymous memory that is zero already) and changes no byte, so no reference to the
        // memory is invalidated.
        unsafe {
            libc::madvise(
                self.base.as_ptr().add(lo).cast(),
                hi - lo,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }

    /// Resolves the externs of span `sid` (already verified, dependencies loaded) and writes its
    /// relocated words.
    // The callback types are spelled out so the signature matches the API contract.
    #[allow(clippy::type_complexity)]
    fn relocate<E>(
        &self,
        sid: u32,
        read: Option<&[u8]>,
        resolve: &mut dyn FnMut(ExternId, &[u8]) -> Result<u64, E>,
    ) -> Result<(), LoadError<E>> {
        let (bstart, blen) = self.bitmaps_range(sid)?;
        let pair: &[u8] = match (read, &self.source) {
            // Read strategy: the pair `begin` read for this span (verified with it).
            (Some(p), Source::Read(_)) if p.len() == blen => p,
            (_, Source::Read(_)) | (Some(_), _) => {
                return Err(ArenaError::kind_only(ErrorKind::BadBitmap { span: sid }).into())
            }
            // SAFETY: a shared `&[u8]` over span `sid`'s bitmap pair in the mapping (Map and
            // Memory sources): in bounds of `mem` and initialized (checked by `bitmaps_range`, as
            // in `begin`); never mutated: this crate never writes BITMAPS (disjoint from the heap
            // bytes written below) and clients may only write inside loaded spans (contract on
            // `base()`).
            (None, _) => unsafe {
                core::slice::from_raw_parts(self.base.as_ptr().add(bstart).cast_const(), blen)
            },
        };
        let (internal, external) = pair.split_at(blen / 2);
        let (start, len) = self.span_range(sid)?;
        // SAFETY: as in `begin`: `[start, start + len)` is inside `mem` (checked by
        // `span_range`), initialized, and exclusively ours: span `sid` is LOADING (set in
        // `begin`, under `lock`, held by this thread; the `&mut` slice made in `begin` is no
        // longer alive), not yet published, disjoint from the tables and from other spans.
        let bytes: &mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(self.base.as_ptr().add(start), len) };
        // Word views (alignment 1, so the casts cannot fail; lengths are multiples of 8: spans
        // by ARENA-TAB-002, bitmaps by ARENA-TAB-010, and `blen` is twice a bitmap's length).
        let bad = || ArenaError::kind_only(ErrorKind::BadBitmap { span: sid });
        let words = <[[u8; 8]]>::mut_from_bytes(bytes).map_err(|_| bad())?;
        let internal = <[[u8; 8]]>::ref_from_bytes(internal).map_err(|_| bad())?;
        let external = <[[u8; 8]]>::ref_from_bytes(external).map_err(|_| bad())?;
        // 1. Resolve every extern this span uses that is not resolved yet (before any write, so
        //    a failing resolver leaves the bytes as they were), in id order. Slot indices are
        //    inside the span (ARENA-SPAN-002, checked by `check_span`); a missing word reads as
        //    id 0 below, never written.
        // (Marks left by an error, or by a panicking resolver, are cleared on drop.)
        let mut todo = Marked {
            arena: self,
            ids: Vec::new(),
        };
        try_for_each_slot(external, |i| -> Result<(), LoadError<E>> {
            let id = words.get(i).map_or(0, |w| u64::from_le_bytes(*w));
            let state = usize::try_from(id)
                .ok()
                .and_then(|x| self.ext_states.get(x))
                .ok_or_else(|| {
                    ArenaError::kind_only(ErrorKind::BadExternId {
                        span: sid,
                        slot: start as u64 + 8 * i as u64,
                        id,
                    })
                })?;
            if state.load(Ordering::Relaxed) == EXT_UNRESOLVED {
                // Marked, so each id is listed once (`id` indexes `ext_states`, whose length is
                // a u32 extern count).
                state.store(EXT_PENDING, Ordering::Relaxed);
                todo.ids.push(id as u32);
            }
            Ok(())
        })?;
        todo.ids.sort_unstable();
        self.resolve_all(&todo.ids, resolve)?;

        // 2. Write (addresses in native byte order: the words become pointers).
        let base = self.base.as_ptr() as usize as u64;
        for_each_slot(internal, |i| {
            if let Some(w) = words.get_mut(i) {
                *w = base.wrapping_add(u64::from_le_bytes(*w)).to_ne_bytes();
            }
        });
        for_each_slot(external, |i| {
            if let Some(w) = words.get_mut(i) {
                let addr = usize::try_from(u64::from_le_bytes(*w))
                    .ok()
                    .and_then(|x| self.externs.get(x))
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                *w = addr.to_ne_bytes();
            }
        });
        Ok(())
    }

    /// Gives loaded span `id` back: it becomes *released* (never loads again:
    /// [`ErrorKind::SpanReleased`]), and every page of memory that holds only bytes of
    /// released spans, of spans never loaded, or of failed ones (never the header's or the
    /// tables' pages) is returned to the system (`MADV_DONTNEED`): a page shared with a span
    /// still in use goes back when that span is released too. Returns the bytes given back.
    ///
    /// Spans not loaded yet stay loadable: the Read strategy reads their bytes again, the
    /// Map strategy finds the file's. An arena made by [`LoadedArena::from_bytes`] has no
    /// copy to go back to: there the span is only marked released. Fails (changing nothing)
    /// unless the span is loaded.
    ///
    /// # Safety
    /// Nothing may read or write the span's bytes after this call: no reference to, or
    /// pointer derived from [`base`](Self::base) into, `[start, start + len)` of the span may
    /// be used again, and no loaded span may still refer to it (a span that depends on it
    /// and that loaded may hold relocated pointers into it).
    pub unsafe fn release_span(&self, id: SpanId) -> Result<u64, ArenaError> {
        let state = self
            .states
            .get(id.0 as usize)
            .ok_or_else(|| ArenaError::kind_only(ErrorKind::NoSuchSpan { span: id.0 }))?;
        let _locked = self.lock_loads()?;
        if state.load(Ordering::Acquire) != LOADED {
            return Err(ErrorKind::InvalidInput {
                what: "only a loaded span can be released",
            }
            .into());
        }
        state.store(RELEASED, Ordering::Release);
        let page = page_size();
        if page == 0 || matches!(self.source, Source::Memory) {
            return Ok(0);
        }
        let (start, len) = self.span_range(id.0)?;
        let heap = self.archive.heap_range();
        let (heap_lo, heap_hi) = (to_usize(heap.start)?, to_usize(heap.end)?);
        // Pages inside the heap (never the header's, never the tables').
        let lo = start / page * page;
        let hi = start.saturating_add(len).next_multiple_of(page);
        let lo = if lo < heap_lo { lo + page } else { lo };
        let hi = if hi > heap_hi { hi - page } else { hi };
        if hi <= lo {
            return Ok(0);
        }
        // Whole pages strictly inside the span go; a page at either end goes if every other
        // span on it is free (spans tile the heap in id order, ARENA-TAB-002).
        let free = |p: usize| -> bool {
            let (pl, ph) = (p as u64, (p + page) as u64);
            // Whether span `sid` is free, `None` if it has no byte on the page.
            let on_page = |sid: u32| -> Option<bool> {
                let e = self.archive.span_entry(SpanId(sid))?;
                let (s, l) = (e.start.get(), e.len.get());
                if s >= ph || s.saturating_add(l) <= pl {
                    return None;
                }
                let st = self.states.get(sid as usize)?.load(Ordering::Acquire);
                Some(l == 0 || matches!(st, RELEASED | UNVERIFIED | FAILED))
            };
            // Walk the neighbours down, then up, while they have bytes on the page.
            for step in [u32::checked_sub, u32::checked_add] {
                let mut s = id.0;
                while let Some(n) = step(s, 1) {
                    match on_page(n) {
                        None => break,
                        Some(false) => return false,
                        Some(true) => s = n,
                    }
                }
            }
            true
        };
        let lo = if start > lo && !free(lo) {
            lo + page
        } else {
            lo
        };
        let hi = if start + len < hi && hi > lo && !free(hi - page) {
            hi - page
        } else {
            hi
        };
        if hi <= lo {
            return Ok(0);
        }
        // SAFETY: `[base + lo, base + hi)` lies inside `mem` (`heap_lo <= lo < hi <= heap_hi
        // <= mem.len()`: the heap lies inside the file, ARENA-LAY-002) and `lo` is page-aligned
        // (`base` starts a mapping). MADV_DONTNEED on this private mapping replaces its pages
        // by the file's bytes (Map) or zeros (Read). No reference to those bytes is alive:
        // - the tables `archive` views lie outside the heap, BITMAPS too (ARENA-LAY-003);
        // - the caller guarantees nothing uses span `id`'s bytes any more (contract above);
        // - every other span with bytes on these pages is released (same contract, given
        //   when it was), failed (never handed out), or not loaded: clients may not access it
        //   (contract on `base()`), and this crate only accesses it in `begin`/`relocate`
        //   under `lock`, which we hold; its next load reads (Read) or finds (Map) its bytes
        //   again, as they were before it was ever touched.
        let r = unsafe {
            libc::madvise(
                self.base.as_ptr().add(lo).cast(),
                hi - lo,
                libc::MADV_DONTNEED,
            )
        };
        if r != 0 {
            return Err(ArenaError::from(std::io::Error::last_os_error()));
        }
        Ok((hi - lo) as u64)
    }

    /// Resolves the externs `ids` (sorted, each marked [`EXT_PENDING`]) with their names (read back
    /// from the file when the Read strategy left them there) and stores their addresses.
    // The callback type is spelled out so the signature matches the API contract.
    #[allow(clippy::type_complexity)]
    fn resolve_all<E>(
        &self,
        ids: &[u32],
        resolve: &mut dyn FnMut(ExternId, &[u8]) -> Result<u64, E>,
    ) -> Result<(), LoadError<E>> {
        // The entries of marked externs are still in their cells.
        let entry = |id: u32| {
            let (o, l) = self
                .externs
                .get(id as usize)
                .map_or((0, 0), |c| cell_entry(c.load(Ordering::Relaxed)));
            (u64::from(o), u64::from(l))
        };
        let read = match (&self.names, &self.source) {
            (Some(names), Source::Read(file)) if !ids.is_empty() => {
                Some(names.read(file, ids.iter().map(|&id| entry(id)))?)
            }
            _ => None,
        };
        for &id in ids {
            let eid = ExternId(id);
            let (o, l) = entry(id);
            let name = match &read {
                Some(buf) => buf.get(o, l),
                None => self.name_in_memory(o, l),
            };
            let addr = resolve(eid, name.unwrap_or(&[])).map_err(LoadError::Client)?;
            if addr == 0 || addr == u64::MAX {
                return Err(ArenaError::kind_only(ErrorKind::UnresolvedExtern { id }).into());
            }
            if let (Some(cell), Some(state)) = (
                self.externs.get(id as usize),
                self.ext_states.get(id as usize),
            ) {
                cell.store(addr, Ordering::Relaxed);
                state.store(EXT_RESOLVED, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Leaks the arena so loaded objects can live for the rest of the process.
    pub fn leak(self) -> &'static LoadedArena {
        Box::leak(Box::new(self))
    }
}
