//! The metadata the import hook stores with each archived module (the client part of a
//! root's metadata): what a normal import would have found, and how to tell that the
//! file is still the one that was dumped. It is read at every open (with the archive's
//! tables), so it stays small: what follows from the origin is not stored.
//!
//! Encoding: `PYM2`, then NUL-separated fields (paths are file-system bytes, which never
//! contain NUL): kind (`m` module, `p` package, `e` extension module), the optimization
//! level the code was compiled for, the file's mtime (ns) and size, its path (`origin`),
//! then optional tagged fields: `c` + the `.pyc` path `spec.cached` names when it is not the
//! one `importlib.util.cache_from_source` derives, `l` + one entry of a package's `__path__`
//! when that is not just the package's directory (repeated, in order), `n` when `spec.cached`
//! is `None` (a source module with no cache path).
//!
//! Derived: the directory a normal import searched to find the module (`entry`: the
//! origin's directory, or for a package the directory containing the package directory).

const MAGIC: &[u8] = b"PYM2";

/// What kind of module a root describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// A module from a `.py` file (code archived).
    Source,
    /// A package from its `__init__.py` (code archived).
    Package,
    /// A C extension module (only its location is archived: found without a path scan,
    /// loaded by the standard `ExtensionFileLoader`).
    Extension,
}

impl ModuleKind {
    fn code(self) -> u8 {
        match self {
            ModuleKind::Source => b'm',
            ModuleKind::Package => b'p',
            ModuleKind::Extension => b'e',
        }
    }

    /// The name used in the Python API (`"module"`, `"package"`, `"extension"`).
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Source => "module",
            ModuleKind::Package => "package",
            ModuleKind::Extension => "extension",
        }
    }

    /// The kind named `name` in the Python API.
    pub fn from_name(name: &str) -> Option<ModuleKind> {
        Some(match name {
            "module" => ModuleKind::Source,
            "package" => ModuleKind::Package,
            "extension" => ModuleKind::Extension,
            _ => return None,
        })
    }
}

/// `spec.cached` of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached<'a> {
    /// What `cache_from_source(origin)` gives (the usual case).
    Default,
    /// Another path.
    Path(&'a [u8]),
    /// `None`.
    None,
}

/// Decoded module metadata (borrowing the archive's bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleMeta<'a> {
    /// Module, package or extension.
    pub kind: ModuleKind,
    /// `sys.flags.optimize` of the dump.
    pub optimize: u8,
    /// Source (or extension file) modification time, ns.
    pub mtime_ns: i64,
    /// Source (or extension file) size.
    pub size: u64,
    /// `__file__` / `spec.origin`.
    pub origin: &'a [u8],
    /// `spec.cached` (always [`Cached::None`] for extensions).
    pub cached: Cached<'a>,
    /// A package's `__path__`, when it is not `[the package's directory]`.
    pub locations: Option<Vec<&'a [u8]>>,
}

/// `os.path.dirname` of a path (bytes), as `posixpath.dirname`.
pub fn dirname(p: &[u8]) -> &[u8] {
    let i = p.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let head = &p[..i];
    // Trailing slashes are removed unless the head is nothing but slashes.
    match head.iter().rposition(|&b| b != b'/') {
        Some(j) => &head[..j + 1],
        None => head,
    }
}

/// `importlib.util.cache_from_source(origin)` for `sys.pycache_prefix` unset: the `.pyc`
/// path of a source file, for interpreter cache tag `tag` and optimization level `opt`.
pub fn default_cached(origin: &[u8], tag: &[u8], opt: u8) -> Vec<u8> {
    let (head, tail) = match origin.iter().rposition(|&b| b == b'/') {
        Some(i) => (&origin[..i], &origin[i + 1..]),
        None => (&b""[..], origin),
    };
    let (base, sep_rest) = match tail.iter().rposition(|&b| b == b'.') {
        Some(i) => (&tail[..i], true),
        None => (tail, false),
    };
    let mut name = Vec::with_capacity(tail.len() + tag.len() + 16);
    // cache_from_source: ''.join([(base if base else rest), sep, tag])
    if base.is_empty() && sep_rest {
        name.extend_from_slice(&tail[1..]);
    } else {
        name.extend_from_slice(base);
    }
    if sep_rest {
        name.push(b'.');
    }
    name.extend_from_slice(tag);
    if opt != 0 {
        name.extend_from_slice(b".opt-");
        name.extend_from_slice(opt.to_string().as_bytes());
    }
    name.extend_from_slice(b".pyc");
    let mut out = Vec::with_capacity(head.len() + name.len() + 13);
    out.extend_from_slice(head);
    if !head.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(b"__pycache__/");
    out.extend_from_slice(&name);
    out
}

impl<'a> ModuleMeta<'a> {
    /// The directory a normal import searched to find the module.
    pub fn entry(&self) -> &'a [u8] {
        let d = dirname(self.origin);
        match self.kind {
            ModuleKind::Package => dirname(d),
            _ => d,
        }
    }

    /// A package's `__path__`.
    pub fn locations(&self) -> Vec<&'a [u8]> {
        match (&self.locations, self.kind) {
            (Some(l), _) => l.clone(),
            (None, ModuleKind::Package) => vec![dirname(self.origin)],
            (None, _) => Vec::new(),
        }
    }

    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        let mut field = |tag: &[u8], f: &[u8]| {
            v.push(0);
            v.extend_from_slice(tag);
            v.extend_from_slice(f);
        };
        field(&[self.kind.code()], b"");
        field(self.optimize.to_string().as_bytes(), b"");
        field(self.mtime_ns.to_string().as_bytes(), b"");
        field(self.size.to_string().as_bytes(), b"");
        field(self.origin, b"");
        match self.cached {
            Cached::Default => {}
            Cached::Path(p) => field(b"c", p),
            Cached::None => field(b"n", b""),
        }
        for l in self.locations.iter().flatten() {
            field(b"l", l);
        }
        v
    }

    /// Decode, or say what is wrong.
    pub fn decode(bytes: &'a [u8]) -> Result<ModuleMeta<'a>, &'static str> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .and_then(|r| r.strip_prefix(b"\0"))
            .ok_or("not pycds module metadata (written by another pycds version?)")?;
        let mut f = rest.split(|&b| b == 0);
        let mut next = || f.next().ok_or("truncated module metadata");
        let kind = match next()? {
            b"m" => ModuleKind::Source,
            b"p" => ModuleKind::Package,
            b"e" => ModuleKind::Extension,
            _ => return Err("unknown module kind"),
        };
        fn num<T: core::str::FromStr>(b: &[u8]) -> Option<T> {
            core::str::from_utf8(b).ok()?.parse().ok()
        }
        let optimize = num(next()?).ok_or("bad optimization level")?;
        let mtime_ns = num(next()?).ok_or("bad mtime")?;
        let size = num(next()?).ok_or("bad size")?;
        let origin = next()?;
        if origin.first() != Some(&b'/') {
            return Err("origin is not an absolute path");
        }
        let mut cached = if kind == ModuleKind::Extension {
            Cached::None
        } else {
            Cached::Default
        };
        let mut locations: Option<Vec<&[u8]>> = None;
        for field in f {
            match field.split_first() {
                Some((b'c', p)) if !p.is_empty() && kind != ModuleKind::Extension => {
                    cached = Cached::Path(p)
                }
                Some((b'n', [])) => cached = Cached::None,
                Some((b'l', p)) if kind == ModuleKind::Package => {
                    locations.get_or_insert_with(Vec::new).push(p)
                }
                _ => return Err("unknown or misplaced field in module metadata"),
            }
        }
        Ok(ModuleMeta {
            kind,
            optimize,
            mtime_ns,
            size,
            origin,
            cached,
            locations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let m = ModuleMeta {
            kind: ModuleKind::Package,
            optimize: 2,
            mtime_ns: -5,
            size: 123,
            origin: b"/a/p/__init__.py",
            cached: Cached::Path(b"/elsewhere/x.pyc"),
            locations: Some(vec![b"/a/p", b"/b/p"]),
        };
        let e = m.encode();
        let d = ModuleMeta::decode(&e).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.entry(), b"/a");
        assert_eq!(d.locations(), vec![&b"/a/p"[..], b"/b/p"]);
        for cut in 0..e.len() {
            // Every truncation fails or decodes to something else; never panics.
            let _ = ModuleMeta::decode(&e[..cut]);
        }
        let plain = ModuleMeta {
            kind: ModuleKind::Source,
            cached: Cached::Default,
            locations: None,
            origin: b"/lib/x.py",
            ..m.clone()
        };
        let e = plain.encode();
        assert_eq!(ModuleMeta::decode(&e).unwrap(), plain);
        assert_eq!(plain.entry(), b"/lib");
        let mut bad = e.clone();
        bad.extend_from_slice(b"\0l/x");
        assert!(ModuleMeta::decode(&bad).is_err(), "__path__ on a module");
        assert!(ModuleMeta::decode(b"PYM2\0x\x000\x000\x000\0/o").is_err());
        assert!(ModuleMeta::decode(b"PYM2\0m\x000\x000\x000\0rel/o").is_err());
        let ext = ModuleMeta {
            kind: ModuleKind::Extension,
            cached: Cached::None,
            locations: None,
            origin: b"/d/_x.so",
            ..m.clone()
        };
        assert_eq!(ModuleMeta::decode(&ext.encode()).unwrap(), ext);
        for k in [
            ModuleKind::Source,
            ModuleKind::Package,
            ModuleKind::Extension,
        ] {
            assert_eq!(ModuleKind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn dirname_and_cache_paths_as_python() {
        assert_eq!(dirname(b"/a/b/c.py"), b"/a/b");
        assert_eq!(dirname(b"/c.py"), b"/");
        assert_eq!(dirname(b"c.py"), b"");
        assert_eq!(dirname(b"/a//c.py"), b"/a");
        assert_eq!(dirname(b"//x"), b"//");
        let tag = b"cpython-312";
        assert_eq!(
            default_cached(b"/l/json/__init__.py", tag, 0),
            b"/l/json/__pycache__/__init__.cpython-312.pyc"
        );
        assert_eq!(
            default_cached(b"/l/x.py", tag, 2),
            b"/l/__pycache__/x.cpython-312.opt-2.pyc"
        );
        assert_eq!(
            default_cached(b"/l/a.b.py", tag, 0),
            b"/l/__pycache__/a.b.cpython-312.pyc"
        );
        assert_eq!(
            default_cached(b"/l/.hidden", tag, 0),
            b"/l/__pycache__/hidden.cpython-312.pyc"
        );
        assert_eq!(
            default_cached(b"/l/x", tag, 0),
            b"/l/__pycache__/xcpython-312.pyc"
        );
    }
}
