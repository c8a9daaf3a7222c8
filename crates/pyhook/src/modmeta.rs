//! The metadata the import hook stores with each archived module (the client part of a
//! root's metadata): what a normal import would have found, and how to tell that the
//! source file is still the one that was dumped.
//!
//! Encoding: `PYM1`, then NUL-separated fields (paths are file-system bytes, which never
//! contain NUL): kind (`m` module, `p` package, `e` extension module), the optimization
//! level the code was compiled for, source mtime (ns), source size, origin, the directory
//! a normal import searched to find it (a `sys.path` entry or an entry of the parent
//! package's `__path__`), the `.pyc` path `spec.cached` would name (empty if none), then
//! the package's `__path__` entries.

const MAGIC: &[u8] = b"PYM1";

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
    /// The directory a normal import searched to find it.
    pub entry: &'a [u8],
    /// `spec.cached` (empty: let importlib compute it).
    pub cached: &'a [u8],
    /// The package's `__path__`.
    pub locations: Vec<&'a [u8]>,
}

impl<'a> ModuleMeta<'a> {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        let mut field = |f: &[u8]| {
            v.push(0);
            v.extend_from_slice(f);
        };
        field(&[self.kind.code()]);
        field(self.optimize.to_string().as_bytes());
        field(self.mtime_ns.to_string().as_bytes());
        field(self.size.to_string().as_bytes());
        field(self.origin);
        field(self.entry);
        field(self.cached);
        for l in &self.locations {
            field(l);
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
        let num = |b: &[u8]| core::str::from_utf8(b).ok().map(str::to_owned);
        let optimize = num(next()?)
            .and_then(|s| s.parse().ok())
            .ok_or("bad optimization level")?;
        let mtime_ns = num(next()?)
            .and_then(|s| s.parse().ok())
            .ok_or("bad mtime")?;
        let size = num(next()?)
            .and_then(|s| s.parse().ok())
            .ok_or("bad size")?;
        let origin = next()?;
        let entry = next()?;
        let cached = next()?;
        if origin.is_empty() || entry.is_empty() {
            return Err("empty path in module metadata");
        }
        let locations: Vec<&[u8]> = f.collect();
        if kind != ModuleKind::Package && !locations.is_empty() {
            return Err("__path__ on a module that is not a package");
        }
        Ok(ModuleMeta {
            kind,
            optimize,
            mtime_ns,
            size,
            origin,
            entry,
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
            entry: b"/a",
            cached: b"",
            locations: vec![b"/a/p", b"/b/p"],
        };
        let e = m.encode();
        assert_eq!(ModuleMeta::decode(&e).unwrap(), m);
        for cut in 0..e.len() - 4 {
            // Every truncation either fails or decodes to something else (never panics).
            let _ = ModuleMeta::decode(&e[..cut]);
        }
        assert!(ModuleMeta::decode(b"PYM1\0x\x000\x000\x000\0/o\0/e\0").is_err());
        let ext = ModuleMeta {
            kind: ModuleKind::Extension,
            locations: vec![],
            ..m.clone()
        };
        assert_eq!(ModuleMeta::decode(&ext.encode()).unwrap(), ext);
        let mut bad = ext.encode();
        bad.extend_from_slice(b"\0/x");
        assert!(ModuleMeta::decode(&bad).is_err());
        for k in [
            ModuleKind::Source,
            ModuleKind::Package,
            ModuleKind::Extension,
        ] {
            assert_eq!(ModuleKind::from_name(k.name()), Some(k));
        }
    }
}
