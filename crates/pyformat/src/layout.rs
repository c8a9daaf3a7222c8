//! In-memory layouts of the CPython objects pycds archives, per interpreter version.
//!
//! The numbers are those of release (non-debug, GIL) x86-64 Linux builds. They are the
//! single source of truth for the writer and the checker; `pycds-pyhook` compares every
//! one of them with a probe compiled against the running interpreter's headers (and with
//! `type.__basicsize__` / `__itemsize__`) before any archive is written or used.

use core::fmt;

/// A CPython feature release that pycds supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PyVersion {
    /// CPython 3.11
    V3_11,
    /// CPython 3.12
    V3_12,
    /// CPython 3.13
    V3_13,
}

impl PyVersion {
    /// The supported release with this `major.minor`, if any.
    pub fn from_major_minor(major: u32, minor: u32) -> Option<PyVersion> {
        match (major, minor) {
            (3, 11) => Some(PyVersion::V3_11),
            (3, 12) => Some(PyVersion::V3_12),
            (3, 13) => Some(PyVersion::V3_13),
            _ => None,
        }
    }

    /// `(major, minor)`.
    pub fn major_minor(self) -> (u32, u32) {
        match self {
            PyVersion::V3_11 => (3, 11),
            PyVersion::V3_12 => (3, 12),
            PyVersion::V3_13 => (3, 13),
        }
    }

    /// The object layout of this release.
    pub fn layout(self) -> &'static Layout {
        match self {
            PyVersion::V3_11 => &LAYOUT_3_11,
            PyVersion::V3_12 => &LAYOUT_3_12,
            PyVersion::V3_13 => &LAYOUT_3_13,
        }
    }
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.major_minor();
        write!(f, "{a}.{b}")
    }
}

/// Field offsets (bytes from the object's start) of `PyCodeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLayout {
    /// `co_consts` (tuple)
    pub consts: usize,
    /// `co_names` (tuple of str)
    pub names: usize,
    /// `co_exceptiontable` (bytes)
    pub exceptiontable: usize,
    /// `co_flags` (i32)
    pub flags: usize,
    /// `co_argcount` (i32)
    pub argcount: usize,
    /// `co_posonlyargcount` (i32)
    pub posonlyargcount: usize,
    /// `co_kwonlyargcount` (i32)
    pub kwonlyargcount: usize,
    /// `co_stacksize` (i32)
    pub stacksize: usize,
    /// `co_firstlineno` (i32)
    pub firstlineno: usize,
    /// `co_nlocalsplus` (i32)
    pub nlocalsplus: usize,
    /// `co_framesize` (i32, 3.12+)
    pub framesize: Option<usize>,
    /// `co_nlocals` (i32)
    pub nlocals: usize,
    /// `co_nplaincellvars` (i32, 3.11 only)
    pub nplaincellvars: Option<usize>,
    /// `co_ncellvars` (i32)
    pub ncellvars: usize,
    /// `co_nfreevars` (i32)
    pub nfreevars: usize,
    /// `co_version` (u32, 3.12+): zero in the archive, assigned at load
    pub version: Option<usize>,
    /// `co_localsplusnames` (tuple of str)
    pub localsplusnames: usize,
    /// `co_localspluskinds` (bytes)
    pub localspluskinds: usize,
    /// `co_filename` (str)
    pub filename: usize,
    /// `co_name` (str)
    pub name: usize,
    /// `co_qualname` (str)
    pub qualname: usize,
    /// `co_linetable` (bytes)
    pub linetable: usize,
    /// `_co_firsttraceable` (i32)
    pub firsttraceable: usize,
    /// `co_code_adaptive[]`: the inline bytecode (2-byte code units); also `tp_basicsize`
    pub adaptive: usize,
    /// `co_warmup` (i16, 3.11 only): the quickening warm-up counter
    pub warmup: Option<usize>,
    /// Runtime caches and mutable state: 8-byte words that are zero in the archive
    /// (`co_weakreflist`, `co_extra`, `_co_code`, `_co_linearray`, `_co_cached`,
    /// `_co_instrumentation_version`, `_co_monitoring`, `co_executors`).
    pub zeroed_words: &'static [usize],
    /// 3.11 `_co_linearray_entry_size` (i16), zero in the archive.
    pub zeroed_i16: &'static [usize],
}

impl CodeLayout {
    /// The nine `PyObject *` fields, in a fixed order (see [`CodeField`]).
    pub fn pointer_fields(&self) -> [usize; 9] {
        [
            self.consts,
            self.names,
            self.exceptiontable,
            self.localsplusnames,
            self.localspluskinds,
            self.filename,
            self.name,
            self.qualname,
            self.linetable,
        ]
    }
}

/// The nine object fields of a code object, in the order of [`CodeLayout::pointer_fields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeField {
    /// `co_consts`
    Consts,
    /// `co_names`
    Names,
    /// `co_exceptiontable`
    ExceptionTable,
    /// `co_localsplusnames`
    LocalsPlusNames,
    /// `co_localspluskinds`
    LocalsPlusKinds,
    /// `co_filename`
    Filename,
    /// `co_name`
    Name,
    /// `co_qualname`
    Qualname,
    /// `co_linetable`
    Linetable,
}

impl CodeField {
    /// All fields in [`CodeLayout::pointer_fields`] order.
    pub const ALL: [CodeField; 9] = [
        CodeField::Consts,
        CodeField::Names,
        CodeField::ExceptionTable,
        CodeField::LocalsPlusNames,
        CodeField::LocalsPlusKinds,
        CodeField::Filename,
        CodeField::Name,
        CodeField::Qualname,
        CodeField::Linetable,
    ];

    /// The attribute name, for messages.
    pub fn attr(self) -> &'static str {
        match self {
            CodeField::Consts => "co_consts",
            CodeField::Names => "co_names",
            CodeField::ExceptionTable => "co_exceptiontable",
            CodeField::LocalsPlusNames => "co_localsplusnames",
            CodeField::LocalsPlusKinds => "co_localspluskinds",
            CodeField::Filename => "co_filename",
            CodeField::Name => "co_name",
            CodeField::Qualname => "co_qualname",
            CodeField::Linetable => "co_linetable",
        }
    }
}

/// Offsets of the compact `str` representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrLayout {
    /// `length` (isize)
    pub length: usize,
    /// `hash` (isize, -1 = not computed)
    pub hash: usize,
    /// `state` (u32 bit field)
    pub state: usize,
    /// `sizeof(PyASCIIObject)`: where ASCII data starts
    pub ascii_size: usize,
    /// `utf8_length` of `PyCompactUnicodeObject`
    pub utf8_length: usize,
    /// `utf8` pointer of `PyCompactUnicodeObject`
    pub utf8: usize,
    /// `sizeof(PyCompactUnicodeObject)`: where non-ASCII data starts
    pub compact_size: usize,
    /// 3.11 `wstr` pointer
    pub wstr: Option<usize>,
    /// 3.11 `wstr_length`
    pub wstr_length: Option<usize>,
    /// bit 7 of `state`: `ready` (3.11, must be 1) or `statically_allocated` (3.12+, must be 0)
    pub bit7_set: bool,
}

/// Bits of `PyASCIIObject.state`.
pub mod state {
    /// `interned` (2 bits)
    pub const INTERNED_MASK: u32 = 0x3;
    /// `kind` (3 bits at bit 2)
    pub const KIND_SHIFT: u32 = 2;
    /// mask of `kind` after shifting
    pub const KIND_MASK: u32 = 0x7;
    /// `compact`
    pub const COMPACT: u32 = 0x20;
    /// `ascii`
    pub const ASCII: u32 = 0x40;
    /// `ready` (3.11) / `statically_allocated` (3.12+)
    pub const BIT7: u32 = 0x80;
}

/// Everything pycds needs to know about one CPython release's object layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The release.
    pub version: PyVersion,
    /// Value of `ob_refcnt` written into every archived object: `1 << 40` on 3.11 (no
    /// immortality yet: never reaches zero, never 1), `_Py_IMMORTAL_REFCNT` on 3.12+.
    pub refcnt: u64,
    /// Value of `ob_refcnt` written into the objects of a *transient* span (module and
    /// class-body code, see [`crate::meta`]): a real count, so the loader can tell whether
    /// anything still holds them after the module body ran. `1 << 40` on 3.11 (as
    /// [`Layout::refcnt`]), `1 << 30` on 3.12+ (mortal: `(int32_t)ob_refcnt >= 0`; never
    /// reaches zero).
    pub transient_refcnt: u64,
    /// `sizeof(PyGC_Head)`, placed (zeroed, untracked) before each tuple.
    pub gc_head: usize,
    /// Offset of `ob_type`.
    pub ob_type: usize,
    /// Offset of `ob_size`.
    pub ob_size: usize,
    /// `PyCodeObject` fields.
    pub code: CodeLayout,
    /// `FRAME_SPECIALS_SIZE` (3.12+ `co_framesize = nlocalsplus + stacksize + this`).
    pub frame_specials: i32,
    /// `PyTupleObject.ob_item`.
    pub tuple_items: usize,
    /// `PyBytesObject.ob_shash`.
    pub bytes_hash: usize,
    /// `PyBytesObject.ob_sval`.
    pub bytes_data: usize,
    /// `str` layout.
    pub str_: StrLayout,
    /// int: `ob_size` (3.11, signed digit count) or `lv_tag` (3.12+).
    pub long_tag: usize,
    /// int: first digit.
    pub long_digits: usize,
    /// Whether the int tag is 3.12's `ndigits << 3 | sign`.
    pub long_lv_tag: bool,
    /// `PyFloatObject.ob_fval`.
    pub float_value: usize,
    /// `sizeof(PyFloatObject)`.
    pub float_size: usize,
    /// `PyComplexObject.cval`.
    pub complex_value: usize,
    /// `sizeof(PyComplexObject)`.
    pub complex_size: usize,
    /// 3.11 `QUICKENING_INITIAL_WARMUP_VALUE`.
    pub quickening_warmup: Option<i16>,
}

/// Bits per int digit (`PYLONG_BITS_IN_DIGIT`) on the supported builds.
pub const LONG_BITS_IN_DIGIT: u32 = 30;
/// Pointer size of the supported builds.
pub const POINTER_SIZE: usize = 8;

const CODE_3_11: CodeLayout = CodeLayout {
    consts: 24,
    names: 32,
    exceptiontable: 40,
    flags: 48,
    argcount: 56,
    posonlyargcount: 60,
    kwonlyargcount: 64,
    stacksize: 68,
    firstlineno: 72,
    nlocalsplus: 76,
    framesize: None,
    nlocals: 80,
    nplaincellvars: Some(84),
    ncellvars: 88,
    nfreevars: 92,
    version: None,
    localsplusnames: 96,
    localspluskinds: 104,
    filename: 112,
    name: 120,
    qualname: 128,
    linetable: 136,
    firsttraceable: 168,
    adaptive: 184,
    warmup: Some(52),
    // co_weakreflist, _co_code, _co_linearray, co_extra
    zeroed_words: &[144, 152, 160, 176],
    zeroed_i16: &[54],
};

const CODE_3_12: CodeLayout = CodeLayout {
    consts: 24,
    names: 32,
    exceptiontable: 40,
    flags: 48,
    argcount: 52,
    posonlyargcount: 56,
    kwonlyargcount: 60,
    stacksize: 64,
    firstlineno: 68,
    nlocalsplus: 72,
    framesize: Some(76),
    nlocals: 80,
    nplaincellvars: None,
    ncellvars: 84,
    nfreevars: 88,
    version: Some(92),
    localsplusnames: 96,
    localspluskinds: 104,
    filename: 112,
    name: 120,
    qualname: 128,
    linetable: 136,
    firsttraceable: 176,
    adaptive: 192,
    warmup: None,
    // co_weakreflist, _co_cached, _co_instrumentation_version, _co_monitoring, co_extra
    zeroed_words: &[144, 152, 160, 168, 184],
    zeroed_i16: &[],
};

const CODE_3_13: CodeLayout = CodeLayout {
    firsttraceable: 184,
    adaptive: 200,
    // co_weakreflist, co_executors, _co_cached, _co_instrumentation_version,
    // _co_monitoring, co_extra
    zeroed_words: &[144, 152, 160, 168, 176, 192],
    ..CODE_3_12
};

const STR_3_11: StrLayout = StrLayout {
    length: 16,
    hash: 24,
    state: 32,
    ascii_size: 48,
    utf8_length: 48,
    utf8: 56,
    compact_size: 72,
    wstr: Some(40),
    wstr_length: Some(64),
    bit7_set: true,
};

const STR_3_12: StrLayout = StrLayout {
    length: 16,
    hash: 24,
    state: 32,
    ascii_size: 40,
    utf8_length: 40,
    utf8: 48,
    compact_size: 56,
    wstr: None,
    wstr_length: None,
    bit7_set: false,
};

/// CPython 3.11.
pub static LAYOUT_3_11: Layout = Layout {
    version: PyVersion::V3_11,
    refcnt: 1 << 40,
    transient_refcnt: 1 << 40,
    gc_head: 16,
    ob_type: 8,
    ob_size: 16,
    code: CODE_3_11,
    frame_specials: 9,
    tuple_items: 24,
    bytes_hash: 24,
    bytes_data: 32,
    str_: STR_3_11,
    long_tag: 16,
    long_digits: 24,
    long_lv_tag: false,
    float_value: 16,
    float_size: 24,
    complex_value: 16,
    complex_size: 32,
    quickening_warmup: Some(-8),
};

/// CPython 3.12.
pub static LAYOUT_3_12: Layout = Layout {
    version: PyVersion::V3_12,
    refcnt: 0xFFFF_FFFF,
    transient_refcnt: 1 << 30,
    code: CODE_3_12,
    str_: STR_3_12,
    long_lv_tag: true,
    quickening_warmup: None,
    ..LAYOUT_3_11
};

/// CPython 3.13.
pub static LAYOUT_3_13: Layout = Layout {
    version: PyVersion::V3_13,
    code: CODE_3_13,
    ..LAYOUT_3_12
};

impl Layout {
    /// The value this layout expects for a named entry of the interpreter probe
    /// (`crates/pyhook/csrc/layout_probe.c`), or `None` if the entry does not apply to
    /// this release (or is not a layout fact, such as the interpreter-state offset).
    pub fn probe_expectation(&self, name: &str) -> Option<i64> {
        let c = &self.code;
        let s = &self.str_;
        let v = |x: usize| Some(x as i64);
        let o = |x: Option<usize>| x.map(|x| x as i64);
        match name {
            "pointer_size" => v(POINTER_SIZE),
            "long_bits_in_digit" => Some(i64::from(LONG_BITS_IN_DIGIT)),
            "py_debug" | "py_trace_refs" | "py_gil_disabled" => Some(0),
            "immortal_refcnt" => match self.version {
                PyVersion::V3_11 => Some(-1),
                _ => Some(self.refcnt as i64),
            },
            "frame_specials_size" => Some(i64::from(self.frame_specials)),
            "object_size" => v(16),
            "var_object_size" => v(24),
            "gc_head_size" => v(self.gc_head),
            "code_consts" => v(c.consts),
            "code_names" => v(c.names),
            "code_exceptiontable" => v(c.exceptiontable),
            "code_flags" => v(c.flags),
            "code_warmup" => o(c.warmup),
            "code_linearray_entry_size" => c.zeroed_i16.first().map(|&x| x as i64),
            "code_nplaincellvars" => o(c.nplaincellvars),
            "code_co_code_cache" if self.version == PyVersion::V3_11 => v(152),
            "code_linearray" if self.version == PyVersion::V3_11 => v(160),
            "quickening_warmup" => self.quickening_warmup.map(i64::from),
            "code_framesize" => o(c.framesize),
            "code_version" => o(c.version),
            "code_cached" => match self.version {
                PyVersion::V3_11 => None,
                PyVersion::V3_12 => v(152),
                PyVersion::V3_13 => v(160),
            },
            "code_instrumentation_version" => match self.version {
                PyVersion::V3_11 => None,
                PyVersion::V3_12 => v(160),
                PyVersion::V3_13 => v(168),
            },
            "code_monitoring" => match self.version {
                PyVersion::V3_11 => None,
                PyVersion::V3_12 => v(168),
                PyVersion::V3_13 => v(176),
            },
            "code_executors" if self.version == PyVersion::V3_13 => v(152),
            "code_argcount" => v(c.argcount),
            "code_posonlyargcount" => v(c.posonlyargcount),
            "code_kwonlyargcount" => v(c.kwonlyargcount),
            "code_stacksize" => v(c.stacksize),
            "code_firstlineno" => v(c.firstlineno),
            "code_nlocalsplus" => v(c.nlocalsplus),
            "code_nlocals" => v(c.nlocals),
            "code_ncellvars" => v(c.ncellvars),
            "code_nfreevars" => v(c.nfreevars),
            "code_localsplusnames" => v(c.localsplusnames),
            "code_localspluskinds" => v(c.localspluskinds),
            "code_filename" => v(c.filename),
            "code_name" => v(c.name),
            "code_qualname" => v(c.qualname),
            "code_linetable" => v(c.linetable),
            "code_weakreflist" => v(144),
            "code_firsttraceable" => v(c.firsttraceable),
            "code_extra" => v(*c.zeroed_words.last()?),
            "code_adaptive" => v(c.adaptive),
            "tuple_items" => v(self.tuple_items),
            "bytes_shash" => v(self.bytes_hash),
            "bytes_sval" => v(self.bytes_data),
            "str_length" => v(s.length),
            "str_hash" => v(s.hash),
            "str_state" => v(s.state),
            "str_wstr" => o(s.wstr),
            "str_wstr_length" => o(s.wstr_length),
            "str_ascii_size" => v(s.ascii_size),
            "str_utf8_length" => v(s.utf8_length),
            "str_utf8" => v(s.utf8),
            "str_compact_size" => v(s.compact_size),
            "long_tag" => v(self.long_tag),
            "long_digits" => v(self.long_digits),
            "float_value" => v(self.float_value),
            "complex_value" => v(self.complex_value),
            "float_size" => v(self.float_size),
            "complex_size" => v(self.complex_size),
            _ => None,
        }
    }

    /// Probe entries that are facts about the interpreter rather than object layout;
    /// they are read, not compared.
    pub const PROBE_INFORMATIONAL: &'static [&'static str] =
        &["py_version_hex", "interp_next_func_version"];

    /// Size in bytes of a code object with `code_units` 16-bit units of bytecode.
    pub fn code_size(&self, code_units: usize) -> Option<usize> {
        code_units.checked_mul(2)?.checked_add(self.code.adaptive)
    }

    /// Size of a tuple object of `n` items (without its GC head).
    pub fn tuple_size(&self, n: usize) -> Option<usize> {
        n.checked_mul(8)?.checked_add(self.tuple_items)
    }

    /// Size of a bytes object of `n` bytes (including the trailing NUL).
    pub fn bytes_size(&self, n: usize) -> Option<usize> {
        n.checked_add(self.bytes_data + 1)
    }

    /// Size of a compact str of `len` code points of width `kind` (1, 2, 4).
    pub fn str_size(&self, ascii: bool, kind: usize, len: usize) -> Option<usize> {
        let data = if ascii {
            self.str_.ascii_size
        } else {
            self.str_.compact_size
        };
        len.checked_add(1)?.checked_mul(kind)?.checked_add(data)
    }

    /// Offset of the character data of a compact str.
    pub fn str_data(&self, ascii: bool) -> usize {
        if ascii {
            self.str_.ascii_size
        } else {
            self.str_.compact_size
        }
    }

    /// Size of an int object with `ndigits` 30-bit digits.
    pub fn int_size(&self, ndigits: usize) -> Option<usize> {
        ndigits.max(1).checked_mul(4)?.checked_add(self.long_digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_sizes_match_reference() {
        // tp_basicsize of code is offsetof(co_code_adaptive): 184, 192, 200.
        assert_eq!(LAYOUT_3_11.code.adaptive, 184);
        assert_eq!(LAYOUT_3_12.code.adaptive, 192);
        assert_eq!(LAYOUT_3_13.code.adaptive, 200);
        assert_eq!(LAYOUT_3_13.code.version, Some(92));
        assert_eq!(LAYOUT_3_13.refcnt, 0xFFFF_FFFF);
    }

    #[test]
    fn pointer_fields_do_not_overlap_zeroed_words() {
        for l in [&LAYOUT_3_11, &LAYOUT_3_12, &LAYOUT_3_13] {
            for p in l.code.pointer_fields() {
                assert!(!l.code.zeroed_words.contains(&p), "{:?}", l.version);
                assert!(p % 8 == 0 && p < l.code.adaptive);
            }
        }
    }

    #[test]
    fn version_round_trip() {
        for v in [PyVersion::V3_11, PyVersion::V3_12, PyVersion::V3_13] {
            let (a, b) = v.major_minor();
            assert_eq!(PyVersion::from_major_minor(a, b), Some(v));
            assert_eq!(v.layout().version, v);
        }
        assert_eq!(PyVersion::from_major_minor(3, 10), None);
        assert_eq!(PyVersion::from_major_minor(3, 14), None);
    }
}
