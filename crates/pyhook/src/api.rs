//! The Python-facing API of the native module (`pycds._pycds`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use pycds_pyformat::profile::split_archive_meta;
use pycds_pyformat::PyArchiveWriter;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping};

use crate::dump::{Dumper, ModuleSplit};
use crate::error::{HookError, HookResult};
use crate::load::{verify_bytes, LoadedArchive};
use crate::modmeta::{self, Cached, ModuleKind, ModuleMeta};
use crate::probe::runtime;

/// Write an archive of named roots: `items` is a list of `(name, value, meta)`;
/// `meta` is stored with the root and returned by `Archive.meta(name)`. Values that
/// cannot be archived are reported in the returned `skipped` list (with `strict=False`)
/// or raise `UnsupportedObjectError`. Returns statistics.
///
/// Code objects are archived from a never-executed copy (a `marshal` round trip) unless
/// `fresh=False` says the values are code objects that never ran (e.g. just unmarshalled
/// from a `.pyc`, as the import hook's dump does).
///
/// `split=True` (the import hook's dumps) archives each module code object in two spans:
/// what a normal import keeps after the body ran, and the module and class-body code it
/// frees then, which the loader gives back to the system once the body has run
/// (`CDSLoader.exec_module`, `Archive.release`).
#[pyfunction]
#[pyo3(signature = (path, items, strict = true, fresh = true, split = false))]
pub fn write_archive<'py>(
    py: Python<'py>,
    path: PathBuf,
    items: Vec<(String, Bound<'py, PyAny>, Vec<u8>)>,
    strict: bool,
    fresh: bool,
    split: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let rt = runtime(py)?;
    let mut w = PyArchiveWriter::new(rt.layout, &rt.fingerprint, b"");
    let skipped = PyList::empty(py);
    let mut seen = std::collections::HashSet::new();
    let mut written = 0usize;
    // Modules split into a kept and a transient span: every module's kept span first, then
    // every transient span (in the same order), so that the transient spans are contiguous
    // and the pages the loader gives back after the bodies ran are whole.
    let mut later = Vec::new();
    for (name, value, meta) in items {
        if !seen.insert(name.clone()) {
            return Err(PyKeyError::new_err(format!("duplicate root name {name:?}")));
        }
        if let Err(e) = Dumper::check_supported(&name, &value) {
            if strict {
                return Err(e.into());
            }
            skipped.append((name, e.to_string()))?;
            continue;
        }
        let value = if fresh {
            Dumper::fresh(py, &value)?
        } else {
            value
        };
        let parts = if split {
            ModuleSplit::of(&value)?
        } else {
            None
        };
        w.begin_span();
        // check_supported accepted the value, so the walks cannot fail on types; any other
        // failure aborts the whole archive (the writer has an open span).
        if let Some(parts) = parts {
            let mut d = Dumper::new(py, &mut w, &name);
            for k in parts.kept() {
                d.object(k)?;
            }
            let memo = d.into_memo();
            let span = w.end_span();
            later.push((name, value, meta, parts, memo, span));
            continue;
        }
        let r = Dumper::new(py, &mut w, &name).object(&value)?;
        w.add_root(name.as_bytes(), r, &meta)
            .map_err(HookError::from)?;
        w.end_span();
        written += 1;
    }
    for (name, value, meta, parts, memo, span) in &later {
        w.begin_transient_span(*span);
        let r = Dumper::transient(py, &mut w, name, parts, memo).object(value)?;
        w.add_root(name.as_bytes(), r, meta)
            .map_err(HookError::from)?;
        w.end_span();
        written += 1;
    }
    let heap = w.heap_len();
    let bytes = w.finish().map_err(|e| HookError::from(e).at(&path))?;
    // Every object is checked before the archive is published: loaders that trust the
    // objects (the import hook) then only verify integrity.
    if let Err(e) = verify_bytes(&bytes) {
        return Err(crate::error::PycdsError::new_err(format!(
            "internal error: the archive written for {} fails its own check ({e}); \
             nothing was written",
            path.display()
        )));
    }
    pycds_arena::write::publish(&bytes, &path).map_err(|e| HookError::from(e).at(&path))?;
    let size = bytes.len() as u64;
    let d = PyDict::new(py);
    d.set_item("roots", written)?;
    d.set_item("bytes", size)?;
    d.set_item("heap_bytes", heap)?;
    d.set_item("skipped", skipped)?;
    Ok(d)
}

/// `pycds.save(path, roots)`: write a mapping of names to archivable objects.
#[pyfunction]
pub fn save(py: Python<'_>, path: PathBuf, roots: &Bound<'_, PyAny>) -> PyResult<()> {
    let m = roots
        .cast::<PyMapping>()
        .map_err(|_| PyTypeError::new_err("roots must be a mapping of str to objects"))?;
    let mut items = Vec::new();
    for k in m.keys()?.iter() {
        let name: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("root names must be str"))?;
        let v = m.get_item(&k)?;
        items.push((name, v, Vec::new()));
    }
    write_archive(py, path, items, true, true, false)?;
    Ok(())
}

/// An archive opened for use in place: a read-only mapping from root names to objects.
/// Roots are loaded on first access and live as long as the process.
#[pyclass(frozen, name = "Archive", module = "pycds._pycds", mapping)]
pub struct Archive {
    inner: LoadedArchive,
}

impl Archive {
    /// The import hook's metadata of module `name` (the client part of its root's
    /// metadata), if the archive has such a root.
    pub fn module_meta(&self, name: &str) -> Option<&[u8]> {
        self.inner.root_meta(name)
    }
}

#[pymethods]
impl Archive {
    /// Open `path`. `check=True` checks every object of a root's span before the root is
    /// handed out (for archives of unknown origin); `check=False` trusts the objects (an
    /// archive written by pycds for this user, as the import hook uses) and verifies only
    /// the span's checksum, slots and fix-up plan.
    #[new]
    #[pyo3(signature = (path, check = true))]
    fn new(py: Python<'_>, path: PathBuf, check: bool) -> PyResult<Self> {
        Ok(Archive {
            inner: LoadedArchive::open(py, &path, check).map_err(|e| e.at(&path))?,
        })
    }

    fn __getitem__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        self.inner
            .get(py, name)?
            .ok_or_else(|| PyKeyError::new_err(name.to_owned()))
    }

    /// The root's object, or `default` if there is no such root.
    #[pyo3(signature = (name, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.inner.get(py, name)?.or(default))
    }

    fn __contains__(&self, name: &str) -> bool {
        self.inner.root_meta(name).is_some()
    }

    fn __len__(&self) -> usize {
        self.inner.arena().archive().root_count() as usize
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.inner.names())?
            .try_iter()
            .map(|i| i.into_any())
    }

    /// Root names, in sorted order.
    fn keys(&self) -> Vec<String> {
        self.inner.names()
    }

    /// The metadata bytes stored with a root, or `None` if there is no such root.
    fn meta<'py>(&self, py: Python<'py>, name: &str) -> Option<Bound<'py, pyo3::types::PyBytes>> {
        self.inner
            .root_meta(name)
            .map(|m| pyo3::types::PyBytes::new(py, m))
    }

    /// The archive's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_owned()
    }

    /// Load statistics: spans and objects made ready, strings interned, seconds spent.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.inner.stats;
        let d = PyDict::new(py);
        d.set_item("spans", s.spans.load(Ordering::Relaxed))?;
        d.set_item("objects", s.objects.load(Ordering::Relaxed))?;
        d.set_item("interned", s.interned.load(Ordering::Relaxed))?;
        d.set_item(
            "load_seconds",
            s.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        )?;
        d.set_item(
            "check_seconds",
            s.check_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        )?;
        d.set_item(
            "fixup_seconds",
            s.fixup_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        )?;
        d.set_item("released", s.released.load(Ordering::Relaxed))?;
        d.set_item("released_bytes", s.released_bytes.load(Ordering::Relaxed))?;
        d.set_item("kept", s.kept.load(Ordering::Relaxed))?;
        Ok(d)
    }

    /// Give back the memory of module `name`'s body and class-body code (the archive's
    /// *transient* span of the module) once the body has run, if nothing holds any of it:
    /// the moment a normal import frees the same objects. Returns whether it did; `False`
    /// when something still holds them (they stay, for good), when `name` has no transient
    /// span (archives written with `split=False`, non-module roots) or it is not loaded.
    /// Afterwards `archive[name]` raises `KeyError` and `get` returns the default (its
    /// metadata stays: `name in archive`, `keys()` and `meta(name)` still show it).
    /// The import hook's loader calls it after `exec_module`.
    fn release(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        Ok(matches!(
            self.inner.release(py, name)?,
            crate::load::Release::Released(_)
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "<pycds.Archive {:?} ({} roots)>",
            self.inner.path(),
            self.__len__()
        )
    }
}

/// `pycds.load(path, check=True)`: open an archive as a read-only mapping.
#[pyfunction]
#[pyo3(signature = (path, check = true))]
pub fn load(py: Python<'_>, path: PathBuf, check: bool) -> PyResult<Archive> {
    Archive::new(py, path, check)
}

/// Full structural and checksum verification of an archive file (of any supported
/// interpreter version); raises `CorruptArchiveError`/`IncompatibleArchiveError`.
#[pyfunction]
pub fn verify<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let bytes = read_regular(&path).map_err(|e| e.at(&path))?;
    let r = verify_bytes(&bytes).map_err(|e| e.at(&path))?;
    let d = PyDict::new(py);
    d.set_item("python", r.version.to_string())?;
    d.set_item("roots", r.roots)?;
    d.set_item("spans", r.spans)?;
    d.set_item("objects", r.objects)?;
    Ok(d)
}

fn read_regular(path: &std::path::Path) -> HookResult<Vec<u8>> {
    let a = pycds_arena::LoadedArena::open(path, pycds_arena::LoadStrategy::Read);
    // open() refuses FIFOs, directories and unreadable files with a precise error.
    a?;
    std::fs::read(path).map_err(|e| {
        HookError::Arena(pycds_arena::ArenaError::new(
            pycds_arena::ErrorKind::Io(e),
            None,
        ))
    })
}

/// Describe an archive: format, producer, fingerprint, roots with their metadata and
/// span sizes, and whether (and why not) this interpreter can use it. Never raises for
/// an archive of another interpreter; raises `CorruptArchiveError` for damaged files.
#[pyfunction]
pub fn inspect<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let bytes = read_regular(&path).map_err(|e| e.at(&path))?;
    let a = pycds_arena::Archive::from_bytes(&bytes).map_err(|e| HookError::from(e).at(&path))?;
    let d = PyDict::new(py);
    let (maj, min) = a.format_version();
    d.set_item("format_version", format!("{maj}.{min}"))?;
    d.set_item("producer", a.producer())?;
    d.set_item("file_bytes", a.file_len())?;
    let heap = a.heap_range();
    d.set_item("heap_bytes", heap.end - heap.start)?;
    let (fp, _) = split_archive_meta(a.archive_meta());
    d.set_item("fingerprint", String::from_utf8_lossy(fp).into_owned())?;
    let usable = match runtime(py) {
        Err(e) => Some(e.to_string()),
        Ok(rt) => match rt.fingerprint.compare_with_text(fp) {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        },
    };
    d.set_item("refused_because", usable)?;
    let roots = PyList::empty(py);
    for i in 0..a.root_count() {
        let Some(r) = a.root(i) else { continue };
        let span_len = a.span(r.span).map(|s| s.len).unwrap_or(0);
        let meta = pycds_pyformat::meta::decode_root_meta(r.meta)
            .map(|(_, c)| c.to_vec())
            .unwrap_or_default();
        roots.append((
            String::from_utf8_lossy(r.name).into_owned(),
            span_len,
            pyo3::types::PyBytes::new(py, &meta),
        ))?;
    }
    d.set_item("roots", roots)?;
    Ok(d)
}

/// Check that pycds supports the running interpreter; returns a description, raises
/// `UnsupportedInterpreterError` otherwise.
#[pyfunction]
pub fn check_interpreter<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let rt = runtime(py)?;
    let d = PyDict::new(py);
    d.set_item("python", rt.layout.version.to_string())?;
    d.set_item("fingerprint", rt.fingerprint.to_text())?;
    d.set_item("code_versions_reserved", rt.version_counter.is_some())?;
    Ok(d)
}

/// Encode the import hook's metadata of one module (see `pycds_pyhook::modmeta`): `kind`,
/// the optimization level, the file's mtime (ns) and size, `origin`, `spec.cached` and, for
/// packages, `__path__`. Only what does not follow from `origin` is stored.
#[pyfunction]
#[pyo3(signature = (kind, optimize, mtime_ns, size, origin, cached, locations))]
#[allow(clippy::too_many_arguments)]
pub fn module_meta<'py>(
    py: Python<'py>,
    kind: &str,
    optimize: u8,
    mtime_ns: i64,
    size: u64,
    origin: PathBuf,
    cached: Option<PathBuf>,
    locations: Vec<PathBuf>,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    use std::os::unix::ffi::OsStrExt;
    let kind = ModuleKind::from_name(kind)
        .ok_or_else(|| PyValueError::new_err(format!("unknown module kind {kind:?}")))?;
    let origin = origin.as_os_str().as_bytes();
    let locations: Vec<&[u8]> = locations.iter().map(|l| l.as_os_str().as_bytes()).collect();
    if origin.first() != Some(&b'/') {
        return Err(PyValueError::new_err("origin must be an absolute path"));
    }
    if kind != ModuleKind::Package && !locations.is_empty() {
        return Err(PyValueError::new_err("only packages have a __path__"));
    }
    let cached = cached.as_ref().map(|c| c.as_os_str().as_bytes());
    if std::iter::once(origin)
        .chain(cached)
        .chain(locations.iter().copied())
        .any(|p| p.contains(&0))
    {
        return Err(PyValueError::new_err("paths must not contain NUL"));
    }
    let tag: Option<String> = py
        .import("sys")?
        .getattr("implementation")?
        .getattr("cache_tag")?
        .extract()?;
    let cached = match (kind, cached) {
        (ModuleKind::Extension, _) | (_, None) => Cached::None,
        (_, Some(c)) => match tag {
            Some(t) if c == modmeta::default_cached(origin, t.as_bytes(), optimize) => {
                Cached::Default
            }
            _ => Cached::Path(c),
        },
    };
    let m = ModuleMeta {
        kind,
        optimize,
        mtime_ns,
        size,
        origin,
        cached,
        locations: None,
    };
    // __path__ is stored only when it is not [the package's directory].
    let locations = (locations != m.locations()).then_some(locations);
    let m = ModuleMeta { locations, ..m };
    Ok(pyo3::types::PyBytes::new(py, &m.encode()))
}

/// Decode the import hook's metadata of one module into a dict: `kind`, `optimize`,
/// `mtime_ns`, `size`, `origin`, `entry` (the directory a normal import searched),
/// `cached` (the `.pyc` path for this interpreter, or `None`) and `locations`; raises
/// `ValueError`.
#[pyfunction]
pub fn decode_module_meta<'py>(py: Python<'py>, meta: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let m = ModuleMeta::decode(meta).map_err(PyValueError::new_err)?;
    let d = PyDict::new(py);
    d.set_item("kind", m.kind.name())?;
    d.set_item("optimize", m.optimize)?;
    d.set_item("mtime_ns", m.mtime_ns)?;
    d.set_item("size", m.size)?;
    d.set_item("origin", OsStr::from_bytes(m.origin))?;
    d.set_item("entry", OsStr::from_bytes(m.entry()))?;
    let tag: Option<String> = py
        .import("sys")?
        .getattr("implementation")?
        .getattr("cache_tag")?
        .extract()?;
    let cached = match m.cached {
        Cached::Default => tag.map(|t| modmeta::default_cached(m.origin, t.as_bytes(), m.optimize)),
        Cached::Path(p) => Some(p.to_vec()),
        Cached::None => None,
    };
    d.set_item("cached", cached.as_deref().map(OsStr::from_bytes))?;
    let locs = PyList::empty(py);
    for l in m.locations() {
        locs.append(OsStr::from_bytes(l))?;
    }
    d.set_item("locations", locs)?;
    Ok(d)
}
