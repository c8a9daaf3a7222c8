//! Using archived objects in place.
//!
//! Opening an archive reads and validates its header and tables only (cost independent
//! of the archive's size) and compares its fingerprint with the running interpreter's.
//! A root's span is loaded on first use: the arena verifies its checksum and slots,
//! `pycds-pyformat` checks every object (or, for trusted archives, computes the fix-up
//! plan from the span's metadata and slots), the arena relocates it and resolves the
//! runtime singletons, type objects and interned strings (created and interned on first
//! use, one per archive), then this module builds frozenset constants and assigns code
//! versions (3.13).
//!
//! Unsafe code here is limited to calls of `crate::ffi` on spans the arena relocated and
//! the checker or planner accepted; each call says which check makes it sound.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use pycds_arena::{LoadError, LoadStrategy, LoadedArena, SpanId};
use pycds_pyformat::meta::{
    check_order, decode_root_meta, single_dependency, span_roots, RootKind,
};
use pycds_pyformat::profile::split_archive_meta;
use pycds_pyformat::{Checker, ExternKind, ExternTable, Planner, SpanPlan};
use pyo3::ffi as pyffi;
use pyo3::prelude::*;

use crate::error::{HookError, HookResult};
use crate::ffi;
use crate::probe::{runtime, Runtime};

const UNLOADED: u8 = 0;
const LOADING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;
/// A transient span given back after its module body ran ([`LoadedArchive::release`]).
const RELEASED: u8 = 4;

/// Load statistics.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// spans made ready
    pub spans: AtomicU64,
    /// objects in them
    pub objects: AtomicU64,
    /// interned strings created (one per distinct string the loaded spans use)
    pub interned: AtomicU64,
    /// nanoseconds spent loading spans (all phases)
    pub nanos: AtomicU64,
    /// of which: the structural check of the span's objects
    pub check_nanos: AtomicU64,
    /// of which: frozensets and code versions after relocation
    pub fixup_nanos: AtomicU64,
    /// transient spans given back after their module body ran
    pub released: AtomicU64,
    /// bytes of memory given back with them
    pub released_bytes: AtomicU64,
    /// transient spans kept because something still held their objects after the body ran
    pub kept: AtomicU64,
}

/// What [`LoadedArchive::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The span was given back (with this many bytes of memory).
    Released(u64),
    /// Something still holds one of its objects (or instrumented its code): kept.
    Kept,
    /// Nothing to do: no such root, not a transient span, not loaded, or released already.
    NotApplicable,
}

/// How [`LoadedArchive`] vets a span's objects before relocating them.
enum Vetting {
    /// Check every object ([`Checker`]): for archives of unknown origin.
    Check(Box<Checker>),
    /// Trust the objects (checked when the archive was written; the span's integrity is
    /// still verified) and only compute the fix-up plan ([`Planner`]).
    Plan(Planner),
}

impl std::fmt::Debug for Vetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Vetting::Check(_) => "Check",
            Vetting::Plan(_) => "Plan",
        })
    }
}

/// An open archive whose roots are loaded on demand and live until the process exits.
pub struct LoadedArchive {
    arena: &'static LoadedArena,
    rt: &'static Runtime,
    externs: ExternTable,
    span_roots: Vec<Vec<(u64, bool)>>,
    status: Vec<AtomicU8>,
    /// How a span's objects are vetted before use.
    vetting: Mutex<Vetting>,
    path: PathBuf,
    /// Load statistics.
    pub stats: LoadStats,
}

impl std::fmt::Debug for LoadedArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedArchive({})", self.path.display())
    }
}

/// The load strategy, from `PYCDS_LOAD` (`read`, the default, or `map`).
fn strategy() -> LoadStrategy {
    match std::env::var("PYCDS_LOAD").as_deref() {
        Ok("map") => LoadStrategy::Map,
        _ => LoadStrategy::Read,
    }
}

impl LoadedArchive {
    /// Open `path` for this interpreter. With `check_objects`, every object of a span is
    /// checked before the span is used ([`Checker`]); without, the objects are trusted
    /// (they were checked when the archive was written) and only the span's integrity
    /// (CRC, slots) and the fix-up plan's offsets are verified ([`Planner`]).
    pub fn open(py: Python<'_>, path: &Path, check_objects: bool) -> HookResult<LoadedArchive> {
        let rt = runtime(py)?;
        if !check_objects {
            refuse_if_others_can_write(path)?;
        }
        let arena = LoadedArena::open(path, strategy())?;
        let a = arena.archive();
        let (fp_text, _client) = split_archive_meta(a.archive_meta());
        rt.fingerprint.compare_with_text(fp_text)?;
        a.check_profile(&rt.fingerprint.profile())?;
        let mut externs = ExternTable::with_capacity(a.extern_count() as usize);
        arena
            .for_each_extern_name(&mut |id, name| externs.push(id, name))
            .map_err(|e| match e {
                LoadError::Arena(a) => HookError::Arena(a),
                LoadError::Client(c) => HookError::Format(c),
            })?;
        let nspans = a.span_count() as usize;
        let span_roots = span_roots(a)?;
        let status = (0..nspans).map(|_| AtomicU8::new(UNLOADED)).collect();
        Ok(LoadedArchive {
            arena: arena.leak(),
            rt,
            externs,
            span_roots,
            status,
            vetting: Mutex::new(if check_objects {
                Vetting::Check(Box::new(Checker::new(rt.layout)))
            } else {
                Vetting::Plan(Planner::new(rt.layout))
            }),
            path: path.to_owned(),
            stats: LoadStats::default(),
        })
    }

    /// The archive file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The arena view (header and tables).
    pub fn arena(&self) -> &'static LoadedArena {
        self.arena
    }

    /// The client part of a root's metadata, if the root exists.
    pub fn root_meta(&self, name: &str) -> Option<&[u8]> {
        let r = self.arena.archive().find_root(name.as_bytes())?;
        decode_root_meta(r.meta).ok().map(|(_, c)| c)
    }

    /// Root names in order.
    pub fn names(&self) -> Vec<String> {
        let a = self.arena.archive();
        (0..a.root_count())
            .filter_map(|i| a.root(i))
            .map(|r| String::from_utf8_lossy(r.name).into_owned())
            .collect()
    }

    /// The object of root `name` (loading its span on first use), or `None` if there is
    /// no such root.
    pub fn get<'py>(&self, py: Python<'py>, name: &str) -> HookResult<Option<Bound<'py, PyAny>>> {
        let Some(root) = self.arena.archive().find_root(name.as_bytes()) else {
            return Ok(None);
        };
        let (kind, _) = decode_root_meta(root.meta)?;
        let released = self
            .status
            .get(root.span.0 as usize)
            .is_some_and(|s| s.load(Ordering::Acquire) == RELEASED);
        if released {
            return Ok(None);
        }
        self.ensure_span(py, root.span)?;
        let base = self.arena.base();
        let mut ptr = base
            .wrapping_add(root.object as usize)
            .cast::<pyffi::PyObject>();
        if kind == RootKind::Holder {
            let item = root.object + self.rt.layout.tuple_items as u64;
            // SAFETY: the span is READY: the checker or the planner verified the root is a
            // 1-tuple of this span, so its first item slot is inside the span and was
            // relocated.
            ptr = unsafe { ffi::span_read(base, item) } as *mut pyffi::PyObject;
        }
        // SAFETY: `ptr` is a live object: either in a READY span of a leaked arena or a
        // runtime object the archive holds a reference to; GIL held.
        Ok(Some(unsafe { Bound::from_borrowed_ptr(py, ptr) }))
    }

    /// Give back the memory of root `name`'s span if it is a transient span (a module's
    /// body and class-body code, see `pycds_pyformat::meta`) that is loaded and that
    /// nothing holds any more: every object still has the reference count it was written
    /// with, and no code object has gained runtime state (`co_extra`, weak references,
    /// cached `co_code`, monitoring or tracing data, executors). This is the moment a normal
    /// import frees the same objects: the loader calls it once the module body has run.
    /// Afterwards the root is gone ([`LoadedArchive::get`] returns `None`, and the import
    /// hook imports the module normally if it is imported again).
    pub fn release(&self, _py: Python<'_>, name: &str) -> HookResult<Release> {
        let Some(root) = self.arena.archive().find_root(name.as_bytes()) else {
            return Ok(Release::NotApplicable);
        };
        let id = root.span;
        let Some(st) = self.status.get(id.0 as usize) else {
            return Ok(Release::NotApplicable);
        };
        if st.load(Ordering::Acquire) != READY {
            return Ok(Release::NotApplicable);
        }
        let Some(info) = self.arena.archive().span(id) else {
            return Ok(Release::NotApplicable);
        };
        let base = self.arena.base();
        // The span's lists, copied out (the planner or checker validated them when the span
        // loaded: every listed offset starts an object of the span, every code offset a
        // code object whose fixed part lies inside it, every frozenset offset a slot).
        let (listed, codes, frozen) = {
            // SAFETY: the span is READY: loaded into the leaked arena, whose memory stays
            // mapped; `[start, start + len)` is the span (arena tables). With the GIL held
            // (`_py`) nothing writes the span while this slice lives: its objects' writers
            // (the interpreter) need the GIL, and the slice is dropped before this function
            // calls into Python.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    base.add(info.start as usize).cast_const(),
                    info.len as usize,
                )
            };
            let meta = pycds_pyformat::meta::SpanMeta::parse(info.meta, bytes)?;
            if !meta.transient() {
                return Ok(Release::NotApplicable);
            }
            (
                meta.listed()
                    .map(|r| info.start + u64::from(r))
                    .collect::<Vec<_>>(),
                meta.codes()
                    .map(|r| info.start + u64::from(r))
                    .collect::<Vec<_>>(),
                meta.frozen()
                    .map(|r| info.start + u64::from(r))
                    .collect::<Vec<_>>(),
            )
        };
        let l = self.rt.layout;
        let read = |off: u64| {
            // SAFETY: every offset read is an object of the READY span (listed, validated at
            // load) or a runtime field inside the fixed part of one of its code objects (the
            // code list, validated at load: the fixed part lies inside the span); the 8-byte
            // word read around a 2-byte field starts at the field's 8-aligned word, inside
            // the same fixed part; GIL held.
            unsafe { ffi::span_read(base, off) }
        };
        let untouched = listed.iter().all(|&o| read(o) == l.transient_refcnt)
            && codes.iter().all(|&c| {
                l.code.zeroed_words.iter().all(|&w| read(c + w as u64) == 0)
                    && l.code.zeroed_i16.iter().all(|&h| {
                        let at = c + h as u64;
                        (read(at & !7) >> (8 * (at & 7))) as u16 == 0
                    })
            });
        if !untouched {
            self.stats.kept.fetch_add(1, Ordering::Relaxed);
            return Ok(Release::Kept);
        }
        st.store(RELEASED, Ordering::Release);
        // The frozensets built at load for the span's tuples: one reference each, which
        // the span's slots held (as a freed `co_consts` tuple would drop it).
        let mut sets: Vec<u64> = frozen
            .iter()
            // SAFETY: frozenset slots of the span (validated at load).
            .map(|&s| unsafe { ffi::span_read(base, s) })
            .collect();
        sets.sort_unstable();
        sets.dedup();
        // SAFETY: the span's own objects are not referenced from anywhere (their counts are
        // what the archive wrote: no reference was ever taken that was not given back) and
        // have no runtime state pointing elsewhere (checked above); no loaded span depends
        // on a transient span (the load check refuses such a dependency), so no pointer into
        // it remains; its root is marked released first, so the archive hands out nothing of
        // it again; GIL held.
        let given = unsafe { self.arena.release_span(id) }?;
        for s in sets {
            // SAFETY: `s` is a frozenset the loader created for this span and whose one
            // reference the span's slots held (`apply`); GIL held.
            unsafe { pyffi::Py_DECREF(s as *mut pyffi::PyObject) };
        }
        self.stats.released.fetch_add(1, Ordering::Relaxed);
        self.stats
            .released_bytes
            .fetch_add(given, Ordering::Relaxed);
        Ok(Release::Released(given))
    }

    /// Make span `id` ready: verified, checked, relocated, fixed up.
    fn ensure_span(&self, py: Python<'_>, id: SpanId) -> HookResult<()> {
        let st = self.status.get(id.0 as usize).ok_or_else(|| {
            HookError::Format(pycds_pyformat::PyFormatError::BadRootMeta { what: "bad span" })
        })?;
        match st.load(Ordering::Acquire) {
            READY => return Ok(()),
            FAILED => {
                // The first failure was reported with its cause; later accesses say the
                // span is unusable (a corrupt-archive error, like the first one).
                return Err(HookError::Arena(pycds_arena::ArenaError::new(
                    pycds_arena::ErrorKind::SpanFailed { span: id.0 },
                    None,
                )));
            }
            LOADING => {
                return Err(HookError::Interpreter(
                    "re-entrant load of an archive span (falling back)".into(),
                ))
            }
            _ => {}
        }
        st.store(LOADING, Ordering::Release);
        let t0 = Instant::now();
        let r = self.load_span(py, id);
        st.store(if r.is_ok() { READY } else { FAILED }, Ordering::Release);
        self.stats
            .nanos
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }

    fn load_span(&self, py: Python<'_>, id: SpanId) -> HookResult<()> {
        let mut plan: Option<SpanPlan> = None;
        let mut dep_plans: Vec<(SpanId, SpanPlan)> = Vec::new();
        {
            let mut vetting = self.vetting.lock().unwrap_or_else(|e| e.into_inner());
            let externs = &self.externs;
            let stats = &self.stats;
            let archive = self.arena.archive();
            let arena = self.arena;
            let status = &self.status;
            let span_roots = &self.span_roots;
            let mut check = |view: &pycds_arena::SpanView<'_>| -> Result<(), HookError> {
                let t = Instant::now();
                // (Called for `id`, then for each dependency not loaded yet: a transient
                // span's module span. The plan kept is `id`'s.)
                let roots: &[(u64, bool)] = span_roots
                    .get(view.id().0 as usize)
                    .map(|v| &v[..])
                    .unwrap_or(&[]);
                // Only transient spans may be given back; nothing may depend on one. A
                // dependency loaded by the arena must have been fixed up too (a load that
                // failed after relocating it left it unusable).
                for d in archive.span(view.id()).iter().flat_map(|s| s.deps.iter()) {
                    let ready = status
                        .get(d.0 as usize)
                        .is_some_and(|s| s.load(Ordering::Acquire) == READY);
                    if arena.is_loaded(d) && !ready {
                        return Err(HookError::Arena(pycds_arena::ArenaError::new(
                            pycds_arena::ErrorKind::SpanFailed { span: d.0 },
                            None,
                        )));
                    }
                    if archive
                        .span(d)
                        .is_some_and(|s| pycds_pyformat::meta::is_transient(s.meta))
                    {
                        return Err(HookError::Format(
                            pycds_pyformat::PyFormatError::BadSpanMeta {
                                what: "a span depends on a transient span",
                            },
                        ));
                    }
                }
                let p = match &mut *vetting {
                    Vetting::Check(c) => {
                        c.check_span(view, externs, roots, single_dependency(archive, view.id()))?
                    }
                    Vetting::Plan(p) => p.plan_span(view, externs, roots)?,
                };
                if view.id() == id {
                    plan = Some(p);
                } else {
                    dep_plans.push((view.id(), p));
                }
                stats
                    .check_nanos
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                Ok(())
            };
            let mut resolve = |xid: pycds_arena::ExternId, name: &[u8]| -> Result<u64, HookError> {
                let kind = externs.kind(xid).ok_or_else(|| {
                    HookError::Format(pycds_pyformat::PyFormatError::UnknownExtern { id: xid.0 })
                })?;
                // SAFETY: GIL held (we have `py`); `name` is the extern's name.
                let p = unsafe { ffi::resolve_extern(kind, name) };
                if p.is_null() {
                    return Err(PyErr::fetch(py).into());
                }
                if kind == ExternKind::InternedStr {
                    stats.interned.fetch_add(1, Ordering::Relaxed);
                }
                Ok(p as u64)
            };
            let loaded = self
                .arena
                .load_span(id, &mut check, &mut resolve)
                .map_err(|e| match e {
                    LoadError::Arena(a) => HookError::Arena(a),
                    LoadError::Client(c) => c,
                });
            // References of a transient span into its module's span were checked against
            // that span's objects (its check follows in load order); `finish` fails if they
            // could not be, and clears that state whatever happened to this load.
            let finished = match &mut *vetting {
                Vetting::Check(c) => c.finish(),
                Vetting::Plan(_) => Ok(()),
            };
            loaded?;
            finished?;
        }
        let Some(plan) = plan else {
            return Err(HookError::Interpreter(
                "span was loaded outside pycds's control".into(),
            ));
        };
        // Dependencies (a transient span's module span) were relocated first: their
        // fix-ups come first too.
        for (span, p) in dep_plans.iter().chain([&(id, plan)]) {
            let t = Instant::now();
            self.apply(py, p)?;
            self.stats
                .fixup_nanos
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.stats.spans.fetch_add(1, Ordering::Relaxed);
            self.stats
                .objects
                .fetch_add(p.objects as u64, Ordering::Relaxed);
            if *span != id {
                // (`id` itself is marked by `ensure_span`.)
                if let Some(st) = self.status.get(span.0 as usize) {
                    st.store(READY, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// The interpreter-side fix-ups of a relocated span.
    fn apply(&self, py: Python<'_>, plan: &SpanPlan) -> HookResult<()> {
        let base = self.arena.base();
        let layout = self.rt.layout;
        // 1. Frozenset constants.
        for (members, refs) in &plan.frozen {
            let tuple = match members {
                Some(m) => base.wrapping_add(*m as usize).cast::<pyffi::PyObject>(),
                // SAFETY: GIL held.
                None => unsafe { ffi::resolve_extern(ExternKind::EmptyTuple, b"tuple:") },
            };
            // SAFETY: `tuple` starts a tuple of this span (checker: the whole object; planner:
            // its header and fixed part, the rest trusted like the archive's bytecode),
            // relocated, or the runtime's empty tuple; GIL held; the arena is leaked.
            let fs = unsafe { ffi::frozenset_from(tuple) };
            if fs.is_null() {
                return Err(PyErr::fetch(py).into());
            }
            for &slot in &plan.frozen_refs[refs.clone()] {
                // SAFETY: a slot word of this span (checker/planner); the new frozenset
                // reference is owned by the archive forever.
                unsafe { ffi::span_write(base, slot, fs as u64) };
            }
        }
        // 2. Code versions (3.13): never reuse dump-time values; reserve fresh ones. Not for
        //    a transient span's code (module and class bodies, each run once): a versioned
        //    function made from it would leave the code's address in the interpreter's
        //    function-version cache, which only a code object's deallocation clears, and the
        //    span may be given back. Version 0 is what exhausted counters give too.
        if let (Some(ctr), Some(field), false) =
            (self.rt.version_counter, layout.code.version, plan.transient)
        {
            let n = u32::try_from(plan.codes.len()).unwrap_or(u32::MAX);
            // SAFETY: `ctr` passed the self-check at start-up; GIL held.
            if let Some(first) = unsafe { ffi::reserve_versions(ctr, n) } {
                for (i, c) in plan.codes.iter().enumerate() {
                    // SAFETY: a code object of this span, not handed out yet.
                    unsafe {
                        ffi::set_code_version(
                            base.wrapping_add(*c as usize),
                            field,
                            first + i as u32,
                        )
                    };
                }
            }
        }
        Ok(())
    }
}

/// An archive whose objects are trusted is code, like a `.pyc`: refuse one that a user other
/// than its owner (or root) could have changed, as ssh refuses loosely protected keys.
/// The file must be owned by this user or root and not writable by group or others; its
/// directory must not let others replace it (not world-writable unless sticky, not writable
/// by a group other than this user's own).
pub fn refuse_if_others_can_write(path: &Path) -> HookResult<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(st) = std::fs::metadata(path) else {
        return Ok(()); // missing or unreadable: opening reports it
    };
    if !st.is_file() {
        return Ok(()); // a device, FIFO or directory: opening refuses it as such
    }
    // SAFETY: geteuid/getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let shown = path.display();
    if st.uid() != uid && st.uid() != 0 {
        return Err(HookError::Insecure(format!(
            "belongs to another user (uid {}); an archive is code: use one you wrote, or \
             have it made yours (chown)",
            st.uid()
        )));
    }
    if st.mode() & 0o022 != 0 {
        return Err(HookError::Insecure(format!(
            "writable by other users (mode {:o}); an archive is code: make it writable by \
             its owner only (chmod go-w {shown})",
            st.mode() & 0o7777
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(d) = std::fs::metadata(&dir) {
        let m = d.mode();
        let world = m & 0o002 != 0 && m & 0o1000 == 0;
        let group = m & 0o020 != 0 && d.gid() != gid && m & 0o1000 == 0;
        if world || group {
            return Err(HookError::Insecure(format!(
                "its directory {} lets other users replace it (mode {:o}); an archive is \
                 code: keep it in a directory only you can write (chmod go-w {}) or one \
                 with the sticky bit",
                dir.display(),
                m & 0o7777,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// What [`verify_bytes`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The CPython release the archive is for.
    pub version: pycds_pyformat::PyVersion,
    /// Number of roots.
    pub roots: u32,
    /// Number of spans.
    pub spans: u32,
    /// Number of objects over all spans.
    pub objects: usize,
}

/// The CPython release an archive was written for, from its fingerprint text.
pub fn archive_version(a: &pycds_arena::Archive<'_>) -> HookResult<pycds_pyformat::PyVersion> {
    Ok(pycds_pyformat::profile::archive_version(a)?)
}

/// Full structural check of an archive held in memory: header, tables, every span's
/// checksum and slots, and every object, against the layout of the release the archive
/// was written for (so archives of other interpreters can be verified too).
pub fn verify_bytes(bytes: &[u8]) -> HookResult<VerifyReport> {
    let a = pycds_arena::Archive::from_bytes(bytes)?;
    let version = archive_version(&a)?;
    let externs = ExternTable::from_archive(&a)?;
    externs.check_interned_names(&a)?;
    let span_roots = span_roots(&a)?;
    let mut checker = Checker::new(version.layout());
    let mut objects = 0;
    // (A module's span is checked right after its transient span, which refers into it;
    // every span is checked at least once.)
    for id in check_order(&a) {
        let view = a.verify_span(id)?;
        objects += checker
            .check_span(
                &view,
                &externs,
                &span_roots[id.0 as usize],
                single_dependency(&a, id),
            )?
            .objects;
    }
    checker.finish()?;
    // Every span passed; the full check adds what no span covers (ARENA-SEC-008).
    a.verify_all()?;
    Ok(VerifyReport {
        version,
        roots: a.root_count(),
        spans: a.span_count(),
        objects,
    })
}
