//! The meta-path finder of SHARE mode: answers `find_spec` from the archive's module
//! index without searching `sys.path`.
//!
//! A module is served only when a normal import would find that same file and the file
//! is what was dumped:
//!
//! 1. its root's metadata decodes and was written for this optimization level (`-O`);
//! 2. the directory the dump found it in is on the search path (`sys.path`, or the parent
//!    package's `__path__`), as the same string or the same absolute path;
//! 3. no entry *before* that one holds a module or regular package of that name, and in
//!    its own directory `FileFinder` would pick this same file (not a package directory or
//!    an extension module of that name added since), answered from one directory listing
//!    per directory and process (cleared by `importlib.invalidate_caches()`); entries that
//!    are not directories, e.g. zip files, are asked through their path importer;
//! 4. the file has the size and modification time (ns) recorded at dump, as `.pyc`
//!    validation does;
//! 5. `sys.path_hooks` is as it was when the finder was made (a program that installs its
//!    own path hooks expects them to take part in its imports).
//!
//! Anything else returns `None` and the next finder (importlib's `PathFinder`) imports the
//! module normally; the reason is reported through the `on_fallback` callback.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::api::Archive;
use crate::modmeta::{default_cached, Cached, ModuleKind, ModuleMeta};

/// What a directory on the search path holds, listed once per process. Listings and the
/// map of them hash with FxHash: keys are local file names and paths, not adversarial input,
/// and these lookups run for every search-path entry of every import (SipHash made
/// `first_found` cost 11 k instructions per call).
enum Listing {
    /// A directory: the names of its entries.
    Dir(FxHashSet<Box<[u8]>>),
    /// Nothing there (no such path, or an unreadable directory): a normal import would
    /// find nothing in it either.
    Missing,
    /// Something else (a zip file, ...): ask its path importer.
    Other,
}

/// `pycds._pycds.Finder(archive, loader, extension_loader, on_fallback, on_other_entry,
/// path_hooks=None)`: the SHARE-mode meta-path finder (`path_hooks`: the `sys.path_hooks`
/// of a normal start-up, by default the current ones).
#[pyclass(frozen, module = "pycds._pycds")]
pub struct Finder {
    archive: Py<Archive>,
    /// `CDSLoader` (a `SourceFileLoader` subclass serving archived code).
    loader: Py<PyAny>,
    /// `on_fallback(name, reason)`.
    on_fallback: Py<PyAny>,
    /// `on_other_entry(name, entry) -> bool`: is `name` found in a non-directory entry?
    on_other_entry: Py<PyAny>,
    sys: Py<PyAny>,
    module_spec: Py<PyAny>,
    /// An `ExtensionFileLoader` (subclass) for extension modules.
    extension_loader: Py<PyAny>,
    /// Loader suffixes in `FileFinder`'s order: extensions, source, bytecode.
    suffixes: Vec<Vec<u8>>,
    optimize: u8,
    /// `sys.pycache_prefix` is unset, so `spec.cached` is the recorded or derived path.
    use_cached: bool,
    /// `sys.implementation.cache_tag`.
    cache_tag: Vec<u8>,
    /// Directory listings by the directory's path bytes (not `PathBuf`, whose `Hash` walks
    /// path components).
    listings: Mutex<FxHashMap<Box<[u8]>, Listing>>,
    /// `sys.path_hooks` when the finder was made: a program that changes them expects its
    /// hooks to see the imports (and they could find other modules), so it gets normal ones.
    path_hooks: Vec<Py<PyAny>>,
}

impl Finder {
    fn fallback<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        reason: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.on_fallback.bind(py).call1((name, reason))?;
        Ok(None)
    }

    /// The absolute directory a search-path entry names (`""` is the current directory).
    fn absolute(py: Python<'_>, entry: &[u8]) -> Option<PathBuf> {
        if entry.first() == Some(&b'/') {
            return Some(PathBuf::from(OsStr::from_bytes(entry)));
        }
        let cwd = std::env::current_dir().ok()?;
        if entry.is_empty() {
            return Some(cwd);
        }
        // A relative entry other than "": as os.path.abspath would make it.
        let os = py.import("os").ok()?;
        let abs = os
            .getattr("path")
            .ok()?
            .call_method1("abspath", (OsStr::from_bytes(entry),))
            .ok()?;
        abs.extract::<PathBuf>().ok()
    }

    /// The listing of directory `dir` in `listings` (listed on first use).
    fn listing<'m>(listings: &'m mut FxHashMap<Box<[u8]>, Listing>, dir: &Path) -> &'m Listing {
        let key = dir.as_os_str().as_bytes();
        if !listings.contains_key(key) {
            listings.insert(key.into(), list_dir(dir));
        }
        // Present: inserted just above if it was not.
        listings.get(key).unwrap_or(&Listing::Missing)
    }

    /// The file `FileFinder.find_spec` would import for module `tail` from directory `dir`
    /// (absolute): a regular package's `__init__` first, then `tail` with each loader
    /// suffix in order (extensions, source, bytecode). `Ok(None)`: nothing there;
    /// `Err(())`: `dir` is not a directory that can be listed (ask its path importer).
    /// A listed candidate equal to `known` (a file whose existence the caller checks
    /// anyway) is taken without a `stat`.
    fn first_found(
        &self,
        dir: &Path,
        tail: &[u8],
        known: Option<&Path>,
    ) -> Result<Option<PathBuf>, ()> {
        let exists = |p: &Path| Some(p) == known || p.is_file();
        let mut buf = Vec::with_capacity(tail.len() + 40);
        // One lock per call, no path cloned unless a directory is listed for the first time
        // (this runs for every search-path entry of every import).
        let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        let has_dir = match Self::listing(&mut listings, dir) {
            Listing::Dir(names) => names.contains(tail),
            Listing::Missing => false,
            Listing::Other => return Err(()),
        };
        if has_dir {
            let pkg = dir.join(OsStr::from_bytes(tail));
            if let Listing::Dir(names) = Self::listing(&mut listings, &pkg) {
                for s in &self.suffixes {
                    buf.clear();
                    buf.extend_from_slice(b"__init__");
                    buf.extend_from_slice(s);
                    if names.contains(&buf[..]) {
                        let init = pkg.join(OsStr::from_bytes(&buf));
                        if exists(&init) {
                            return Ok(Some(init));
                        }
                    }
                }
            }
        }
        if let Listing::Dir(names) = Self::listing(&mut listings, dir) {
            for s in &self.suffixes {
                buf.clear();
                buf.extend_from_slice(tail);
                buf.extend_from_slice(s);
                if names.contains(&buf[..]) {
                    let file = dir.join(OsStr::from_bytes(&buf));
                    if exists(&file) {
                        return Ok(Some(file));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn list_dir(dir: &Path) -> Listing {
    match std::fs::read_dir(dir) {
        Ok(rd) => Listing::Dir(
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().as_bytes().into())
                .collect(),
        ),
        // A file (`x.zip`) or a path through one (`x.zip/sub/dir`): both fail with ENOTDIR;
        // the entry's path importer (zipimport) may accept them.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Listing::Other,
        Err(_) => Listing::Missing,
    }
}

/// The file-system bytes of a path string (`os.fsencode`), or `None` for other objects.
fn fs_bytes<'a>(s: &'a Bound<'_, PyAny>) -> Option<std::borrow::Cow<'a, [u8]>> {
    let s = s.cast::<PyString>().ok()?;
    match s.to_str() {
        Ok(t) => Some(std::borrow::Cow::Borrowed(t.as_bytes())),
        Err(_) => s
            .extract::<PathBuf>()
            .ok()
            .map(|p| std::borrow::Cow::Owned(p.into_os_string().into_vec())),
    }
}

#[pymethods]
impl Finder {
    #[new]
    #[pyo3(signature = (archive, loader, extension_loader, on_fallback, on_other_entry, path_hooks = None))]
    fn new(
        py: Python<'_>,
        archive: Py<Archive>,
        loader: Py<PyAny>,
        extension_loader: Py<PyAny>,
        on_fallback: Py<PyAny>,
        on_other_entry: Py<PyAny>,
        path_hooks: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let sys = py.import("sys")?;
        let bootstrap = py.import("_frozen_importlib")?;
        let external = py.import("_frozen_importlib_external")?;
        let mut suffixes = Vec::new();
        for list in ["EXTENSION_SUFFIXES", "SOURCE_SUFFIXES", "BYTECODE_SUFFIXES"] {
            for s in external.getattr(list)?.try_iter()? {
                suffixes.push(s?.extract::<String>()?.into_bytes());
            }
        }
        let optimize: u8 = sys.getattr("flags")?.getattr("optimize")?.extract()?;
        let path_hooks = path_hooks
            .map_or_else(|| sys.getattr("path_hooks"), Ok)?
            .try_iter()?
            .map(|h| h.map(Bound::unbind))
            .collect::<PyResult<Vec<_>>>()?;
        let use_cached = sys.getattr("pycache_prefix")?.is_none();
        let cache_tag: Option<String> = sys
            .getattr("implementation")?
            .getattr("cache_tag")?
            .extract()?;
        Ok(Finder {
            archive,
            loader,
            on_fallback,
            on_other_entry,
            sys: sys.into_any().unbind(),
            module_spec: bootstrap.getattr("ModuleSpec")?.unbind(),
            extension_loader,
            suffixes,
            optimize,
            use_cached: use_cached && cache_tag.is_some(),
            cache_tag: cache_tag.unwrap_or_default().into_bytes(),
            listings: Mutex::new(FxHashMap::default()),
            path_hooks,
        })
    }

    /// `importlib.abc.MetaPathFinder.find_spec`.
    #[pyo3(signature = (fullname, path = None, target = None))]
    fn find_spec<'py>(
        &self,
        py: Python<'py>,
        fullname: &str,
        path: Option<Bound<'py, PyAny>>,
        target: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let _ = target;
        let archive = self.archive.get();
        let Some(raw) = archive.module_meta(fullname) else {
            return Ok(None);
        };
        let meta = match ModuleMeta::decode(raw) {
            Ok(m) => m,
            Err(why) => return self.fallback(py, fullname, &format!("bad metadata: {why}")),
        };
        if meta.optimize != self.optimize {
            // Code compiled for another -O level (asserts, __debug__, docstrings differ).
            return self.fallback(
                py,
                fullname,
                &format!("dumped for optimization level {}", meta.optimize),
            );
        }
        // Path hooks changed since start-up: a normal import would consult them.
        let hooks = self.sys.bind(py).getattr("path_hooks")?;
        let same_hooks = hooks.cast::<PyList>().is_ok_and(|l| {
            l.len() == self.path_hooks.len() && l.iter().zip(&self.path_hooks).all(|(a, b)| a.is(b))
        });
        if !same_hooks {
            return self.fallback(py, fullname, "sys.path_hooks changed");
        }
        // 2. Where a normal import would search, and which entry holds the module.
        let search = match path {
            Some(p) if !p.is_none() => p,
            _ => self.sys.bind(py).getattr("path")?,
        };
        let Ok(iter) = search.try_iter() else {
            return self.fallback(py, fullname, "parent __path__ is not iterable");
        };
        let entry = meta.entry();
        let entry_abs = Path::new(OsStr::from_bytes(entry));
        let mut earlier: Vec<Bound<'py, PyAny>> = Vec::new();
        let mut found = false;
        for e in iter {
            let e = e?;
            if let Some(b) = fs_bytes(&e) {
                if *b == *entry
                    || (b.first() != Some(&b'/')
                        && Self::absolute(py, &b).is_some_and(|a| a == entry_abs))
                {
                    found = true;
                    break;
                }
            }
            earlier.push(e);
        }
        if !found {
            let entry = String::from_utf8_lossy(entry);
            return self.fallback(py, fullname, &format!("not on the search path ({entry})"));
        }
        // 3. Shadowed by a module earlier on the path?
        let tail = fullname.rsplit('.').next().unwrap_or(fullname).as_bytes();
        for e in &earlier {
            let Some(b) = fs_bytes(e) else { continue };
            let Some(dir) = Self::absolute(py, &b) else {
                continue;
            };
            let shadows = match self.first_found(&dir, tail, None) {
                Ok(found) => found.is_some(),
                Err(()) => self
                    .on_other_entry
                    .bind(py)
                    .call1((fullname, e))?
                    .is_truthy()?,
            };
            if shadows {
                return self.fallback(py, fullname, "shadowed by a module earlier on the path");
            }
        }
        // ... or, in its own directory, by a package or a module file FileFinder prefers
        // (a package directory over `name.py`, an extension over both).
        let origin = Path::new(OsStr::from_bytes(meta.origin));
        if let Ok(Some(first)) = self.first_found(entry_abs, tail, Some(origin)) {
            if first != origin {
                return self.fallback(
                    py,
                    fullname,
                    "shadowed by another module in its own directory",
                );
            }
        }
        // 4. Unchanged since the dump?
        match std::fs::metadata(origin) {
            Err(_) => return self.fallback(py, fullname, "source file missing"),
            Ok(st) => {
                let mtime_ns = st.mtime() * 1_000_000_000 + st.mtime_nsec();
                if mtime_ns != meta.mtime_ns || st.len() != meta.size {
                    return self.fallback(py, fullname, "source file changed");
                }
            }
        }
        // The spec `spec_from_file_location` would make.
        // A str, not a pathlib.Path (pyo3 converts `Path` to `pathlib.Path`).
        let origin_s = OsStr::from_bytes(meta.origin).into_pyobject(py)?;
        let loader = match meta.kind {
            ModuleKind::Extension => self.extension_loader.bind(py),
            _ => self.loader.bind(py),
        }
        .call1((fullname, &origin_s))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("origin", &origin_s)?;
        let spec = self
            .module_spec
            .bind(py)
            .call((fullname, loader), Some(&kwargs))?;
        spec.setattr("_set_fileattr", true)?;
        if meta.kind == ModuleKind::Package {
            let locs = PyList::empty(py);
            for l in meta.locations() {
                locs.append(OsStr::from_bytes(l))?;
            }
            spec.setattr("submodule_search_locations", locs)?;
        }
        if self.use_cached {
            match meta.cached {
                Cached::Default => spec.setattr(
                    "cached",
                    OsStr::from_bytes(&default_cached(meta.origin, &self.cache_tag, meta.optimize)),
                )?,
                Cached::Path(p) => spec.setattr("cached", OsStr::from_bytes(p))?,
                // None: importlib would compute None too (extensions), or leave it lazy.
                Cached::None => {}
            }
        }
        Ok(Some(spec))
    }

    /// `importlib.invalidate_caches()`: forget the directory listings.
    fn invalidate_caches(&self) {
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The archive this finder serves from.
    #[getter]
    fn archive(&self, py: Python<'_>) -> Py<Archive> {
        self.archive.clone_ref(py)
    }
}
