//! The interpreter fingerprint: which CPython build an archive belongs to.
//!
//! The arena header holds a 32-byte opaque profile; pycds sets it to the SHA-256 of the
//! fingerprint's canonical text, and stores that text in the archive metadata so that a
//! mismatch can be explained entry by entry.

use sha2::{Digest, Sha256};

use crate::error::PyFormatError;
use crate::layout::PyVersion;

/// Name of the Python profile of the arena, first line of the archive metadata.
pub const PROFILE_NAME: &str = "pycds-python/2";

/// Everything that must be identical between the dumping and the loading interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// `sys.version`, the full build string (specialised opcodes are build-specific).
    pub sys_version: String,
    /// `sys.hexversion`
    pub hexversion: u32,
    /// `importlib.util.MAGIC_NUMBER`, hex
    pub magic: String,
    /// `sys.abiflags`
    pub abiflags: String,
    /// `sys.implementation.cache_tag`
    pub cache_tag: String,
    /// pointer size in bytes
    pub pointer_size: u32,
    /// `sys.int_info.bits_per_digit`
    pub digit_bits: u32,
    /// `sys.byteorder`
    pub byteorder: String,
    /// `Py_DEBUG`
    pub debug: bool,
    /// `Py_TRACE_REFS`
    pub trace_refs: bool,
    /// `Py_GIL_DISABLED`
    pub gil_disabled: bool,
    /// `-X no_debug_ranges` / `PYTHONNODEBUGRANGES`: changes the line tables CPython makes.
    pub no_debug_ranges: bool,
}

impl Fingerprint {
    /// The fingerprint of a release build of CPython `v` (64-bit, little-endian, 30-bit
    /// digits, GIL) that no real interpreter reports: `sys.version` is `"X.Y.0 (label)"` and
    /// the `.pyc` magic `00000d0a`. For writing archives where no interpreter is at hand
    /// (tests, fuzzing seeds); the import hook always fingerprints the running interpreter.
    pub fn synthetic(v: PyVersion, label: &str) -> Fingerprint {
        let (a, b) = v.major_minor();
        Fingerprint {
            sys_version: format!("{a}.{b}.0 ({label})"),
            hexversion: (a << 24) | (b << 16) | 0xf0,
            magic: "00000d0a".into(),
            abiflags: String::new(),
            cache_tag: format!("cpython-{a}{b}"),
            pointer_size: 8,
            digit_bits: 30,
            byteorder: "little".into(),
            debug: false,
            trace_refs: false,
            gil_disabled: false,
            no_debug_ranges: false,
        }
    }

    /// Canonical text: `key=value` lines in a fixed order.
    pub fn to_text(&self) -> String {
        let b = |x: bool| if x { "1" } else { "0" };
        format!(
            "profile={PROFILE_NAME}\nsys.version={}\nhexversion={:#010x}\nmagic={}\nabiflags={}\ncache_tag={}\npointer_size={}\ndigit_bits={}\nbyteorder={}\nPy_DEBUG={}\nPy_TRACE_REFS={}\nPy_GIL_DISABLED={}\nno_debug_ranges={}\n",
            self.sys_version.replace('\n', " "),
            self.hexversion,
            self.magic,
            self.abiflags,
            self.cache_tag,
            self.pointer_size,
            self.digit_bits,
            self.byteorder,
            b(self.debug),
            b(self.trace_refs),
            b(self.gil_disabled),
            b(self.no_debug_ranges),
        )
    }

    /// The 32-byte arena profile.
    pub fn profile(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.to_text().as_bytes());
        h.finalize().into()
    }

    /// Compare the fingerprint text stored in an archive with this one; `Ok` when equal,
    /// otherwise an incompatibility error listing each difference.
    pub fn compare_with_text(&self, stored: &[u8]) -> Result<(), PyFormatError> {
        let mine = self.to_text();
        if stored == mine.as_bytes() {
            return Ok(());
        }
        let stored = String::from_utf8_lossy(stored);
        let theirs: Vec<(&str, &str)> = stored.lines().filter_map(|l| l.split_once('=')).collect();
        let mut diffs = Vec::new();
        let mut only_flags = true;
        for line in mine.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match theirs.iter().find(|(tk, _)| *tk == k) {
                Some((_, tv)) if *tv == v => {}
                Some((_, tv)) => {
                    only_flags &= COMPILER_FLAGS.contains(&k);
                    diffs.push(format!("{k}: archive {tv:?}, running {v:?}"))
                }
                None => {
                    only_flags = false;
                    diffs.push(format!("{k}: missing from archive"))
                }
            }
        }
        if diffs.is_empty() || theirs.len() != mine.lines().count() {
            only_flags = false;
        }
        if diffs.is_empty() {
            diffs.push("fingerprint text differs".into());
        }
        let differences = diffs.join("; ");
        Err(if only_flags {
            PyFormatError::CompilerFlagsMismatch { differences }
        } else {
            PyFormatError::ProfileMismatch { differences }
        })
    }
}

/// Fingerprint entries that are interpreter options rather than the build: the same
/// installation compiles other code under them, so an archive dumped with other values is
/// simply not for this process (a quiet fall-back, not a warning).
const COMPILER_FLAGS: [&str; 1] = ["no_debug_ranges"];

/// Split archive metadata into the fingerprint text and the client's trailing bytes.
/// The metadata is the fingerprint text, a NUL byte, then client bytes.
pub fn split_archive_meta(meta: &[u8]) -> (&[u8], &[u8]) {
    match meta.iter().position(|&b| b == 0) {
        Some(i) => (&meta[..i], &meta[i + 1..]),
        None => (meta, &[]),
    }
}

/// The CPython release an archive was written for, from the `hexversion=` line of its
/// fingerprint text.
pub fn archive_version(a: &pycds_arena::Archive<'_>) -> Result<PyVersion, PyFormatError> {
    let (fp, _) = split_archive_meta(a.archive_meta());
    let hex = core::str::from_utf8(fp)
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("hexversion=")))
        .and_then(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok())
        .ok_or(PyFormatError::BadRootMeta {
            what: "archive metadata has no interpreter fingerprint",
        })?;
    let (major, minor) = (hex >> 24, (hex >> 16) & 0xff);
    PyVersion::from_major_minor(major, minor).ok_or_else(|| PyFormatError::ProfileMismatch {
        differences: format!("archive is for CPython {major}.{minor}"),
    })
}

/// Build archive metadata from a fingerprint and client bytes.
pub fn archive_meta(fp: &Fingerprint, client: &[u8]) -> Vec<u8> {
    let mut v = fp.to_text().into_bytes();
    v.push(0);
    v.extend_from_slice(client);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint {
            sys_version: "3.12.1 (main) [GCC 12]".into(),
            hexversion: 0x030c01f0,
            magic: "cb0d0d0a".into(),
            ..Fingerprint::synthetic(PyVersion::V3_12, "")
        }
    }

    #[test]
    fn mismatch_names_the_difference() {
        let a = fp();
        let mut c = fp();
        c.no_debug_ranges = true;
        let e = a.compare_with_text(c.to_text().as_bytes()).unwrap_err();
        assert!(
            matches!(e, PyFormatError::CompilerFlagsMismatch { .. }),
            "{e}"
        );
        assert!(e.is_incompatible());
        let mut b = fp();
        b.sys_version = "3.12.2".into();
        b.no_debug_ranges = true;
        assert_ne!(a.profile(), b.profile());
        assert!(a.compare_with_text(a.to_text().as_bytes()).is_ok());
        let e = a.compare_with_text(b.to_text().as_bytes()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sys.version") && msg.contains("no_debug_ranges"),
            "{msg}"
        );
        assert!(e.is_incompatible());
    }

    #[test]
    fn meta_split() {
        let m = archive_meta(&fp(), b"xyz");
        let (t, c) = split_archive_meta(&m);
        assert_eq!(t, fp().to_text().as_bytes());
        assert_eq!(c, b"xyz");
    }
}
