//! Every raw CPython operation of pycds: reading live objects' memory at dump time,
//! writing fixed-up words into loaded spans, interning, building frozensets, resolving
//! runtime singletons, reserving code versions.
//!
//! This is one of the two modules of pycds allowed to use `unsafe` (the other is the
//! arena's loader). Its callers guarantee, and each function's `# Safety` section states:
//! the GIL is held; object offsets come from the `pycds-pyformat` layout that
//! [`crate::probe`] verified against this interpreter before any archive was touched;
//! addresses inside loaded spans come from a span that the arena relocated and that
//! `pycds-pyformat`'s checker accepted (so every offset the plan names is a slot of the
//! right kind inside that span).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};

use pycds_pyformat::{ExternKind, TypeTag};
use pyo3::ffi;

/// One entry of the compiled layout probe (`csrc/layout_probe.c`).
#[repr(C)]
pub(crate) struct ProbeEntry {
    name: *const c_char,
    value: i64,
}

extern "C" {
    static pycds_layout_probe: [ProbeEntry; 0];
    static pycds_layout_probe_len: usize;
}

/// The probe table as `(name, value)` pairs.
pub(crate) fn probe_entries() -> Vec<(String, i64)> {
    // SAFETY:
    // - `pycds_layout_probe_len` is a `const size_t` defined in csrc/layout_probe.c as the
    //   element count of `pycds_layout_probe`, a `const` array of `ProbeEntry` whose C
    //   definition (`{const char *, int64_t}`) matches this `#[repr(C)]` struct.
    // - Both are immutable statics linked into this library, alive for the program.
    let len = unsafe { pycds_layout_probe_len };
    // SAFETY: see above: `len` elements of `ProbeEntry` start at `pycds_layout_probe`.
    let entries = unsafe {
        std::slice::from_raw_parts((&raw const pycds_layout_probe).cast::<ProbeEntry>(), len)
    };
    entries
        .iter()
        .map(|e| {
            // SAFETY: every `name` is a C string literal in the probe table.
            let name = unsafe { std::ffi::CStr::from_ptr(e.name) };
            (name.to_string_lossy().into_owned(), e.value)
        })
        .collect()
}

/// Copy `len` bytes of a live object's memory.
///
/// # Safety
/// The GIL is held, `obj` is alive for the duration of the call, and its allocation is
/// at least `len` bytes long (callers derive `len` from the verified layout and the
/// object's own size field).
pub(crate) unsafe fn object_bytes(obj: *mut ffi::PyObject, len: usize) -> Vec<u8> {
    // SAFETY: the caller guarantees `obj` points to at least `len` readable bytes.
    unsafe { std::slice::from_raw_parts(obj.cast::<u8>(), len) }.to_vec()
}

/// Read a little-endian word of a live object.
///
/// # Safety
/// As [`object_bytes`] with `len = off + 8`.
pub(crate) unsafe fn object_u64(obj: *mut ffi::PyObject, off: usize) -> u64 {
    // SAFETY: the caller guarantees `off + 8` bytes are readable; unaligned read is fine.
    unsafe { obj.cast::<u8>().add(off).cast::<u64>().read_unaligned() }
}

/// Read a `u32` of a live object.
///
/// # Safety
/// As [`object_bytes`] with `len = off + 4`.
pub(crate) unsafe fn object_u32(obj: *mut ffi::PyObject, off: usize) -> u32 {
    // SAFETY: the caller guarantees `off + 4` bytes are readable.
    unsafe { obj.cast::<u8>().add(off).cast::<u32>().read_unaligned() }
}

/// Read the word at `base + off` of a loaded span.
///
/// # Safety
/// `base + off .. base + off + 8` lies inside a loaded span of a leaked arena (never
/// unmapped); the GIL is held.
pub(crate) unsafe fn span_read(base: *mut u8, off: u64) -> u64 {
    // SAFETY: the caller guarantees the 8 bytes are inside a live, loaded span.
    unsafe { base.add(off as usize).cast::<u64>().read_unaligned() }
}

/// Write the word at `base + off` of a loaded span.
///
/// # Safety
/// As [`span_read`]; additionally the word is a slot (or a field the checker verified) of
/// a span whose objects have not been handed to the interpreter yet, or a field that
/// CPython itself writes under the GIL (the str `state`).
pub(crate) unsafe fn span_write(base: *mut u8, off: u64, value: u64) {
    // SAFETY: the caller guarantees the 8 bytes are inside a live, loaded span.
    unsafe { base.add(off as usize).cast::<u64>().write_unaligned(value) }
}

/// The address of the runtime object an extern of `kind` named `name` stands for, as a
/// new (leaked, owned by the archive forever) reference where the API returns one. Null
/// on failure (with a Python exception set).
///
/// # Safety
/// The GIL is held.
pub(crate) unsafe fn resolve_extern(kind: ExternKind, name: &[u8]) -> *mut ffi::PyObject {
    // SAFETY: all calls are documented CPython API functions called with
    // the GIL held; the statics are the interpreter's exported type objects and
    // singletons, alive for the life of the process.
    unsafe {
        match kind {
            ExternKind::Type(t) => type_object(t).cast(),
            ExternKind::None => ffi::Py_None(),
            ExternKind::True => ffi::Py_True(),
            ExternKind::False => ffi::Py_False(),
            ExternKind::Ellipsis => ffi::Py_Ellipsis(),
            ExternKind::EmptyTuple => ffi::PyTuple_New(0),
            ExternKind::EmptyStr => ffi::PyUnicode_FromStringAndSize(std::ptr::null(), 0),
            ExternKind::EmptyBytes => ffi::PyBytes_FromStringAndSize(std::ptr::null(), 0),
            ExternKind::SmallInt(v) => ffi::PyLong_FromLong(v.into()),
            ExternKind::Char(c) => ffi::PyUnicode_FromOrdinal(c_int::from(c)),
            ExternKind::InternedChar(c) => {
                // What a normal import gives for an interned one-character string: the
                // runtime's singleton passed through interning (the canonical string,
                // which can be another object if one was interned first).
                let mut p = ffi::PyUnicode_FromOrdinal(c_int::from(c));
                if !p.is_null() {
                    ffi::PyUnicode_InternInPlace(&raw mut p);
                }
                p
            }
            ExternKind::Byte(b) => {
                let c = b as c_char;
                ffi::PyBytes_FromStringAndSize(&raw const c, 1)
            }
            ExternKind::InternedStr => interned_str(name),
        }
    }
}

/// The exported type object for a tag.
pub(crate) fn type_object(t: TypeTag) -> *mut ffi::PyTypeObject {
    // Taking the address of an exported static (`&raw mut`) never reads or writes it.
    match t {
        TypeTag::Code => &raw mut ffi::PyCode_Type,
        TypeTag::Tuple => &raw mut ffi::PyTuple_Type,
        TypeTag::Str => &raw mut ffi::PyUnicode_Type,
        TypeTag::Bytes => &raw mut ffi::PyBytes_Type,
        TypeTag::Int => &raw mut ffi::PyLong_Type,
        TypeTag::Float => &raw mut ffi::PyFloat_Type,
        TypeTag::Complex => &raw mut ffi::PyComplex_Type,
    }
}

/// The exported `frozenset` type object.
pub(crate) fn frozenset_type() -> *mut ffi::PyTypeObject {
    &raw mut ffi::PyFrozenSet_Type
}

/// A new str with the characters of an [`ExternKind::InternedStr`] extern name, passed
/// through `PyUnicode_InternInPlace` (the canonical object, which may be one interned before;
/// immortal on 3.12 and 3.13, where marshal may leave some interned strings mortal). Null with a Python exception set when the
/// name is not canonical ([`pycds_pyformat::externs::parse_interned_str`]).
///
/// # Safety
/// The GIL is held.
unsafe fn interned_str(name: &[u8]) -> *mut ffi::PyObject {
    let Some((kind, data)) = pycds_pyformat::externs::parse_interned_str(name) else {
        // SAFETY: GIL held (caller); both arguments are valid for the call.
        unsafe {
            ffi::PyErr_SetString(
                ffi::PyExc_ValueError,
                c"pycds: malformed interned-string extern".as_ptr(),
            )
        };
        return std::ptr::null_mut();
    };
    // Both branches: GIL held (caller); the buffer holds `len` code units of
    // the given kind, each <= U+10FFFF (checked by `parse_interned_str`);
    // PyUnicode_FromKindAndData copies them into a new str of the narrowest kind (for a
    // canonical name: `kind`). PyUnicode_InternInPlace takes a pointer to our new
    // reference and may replace it by the canonical one (dropping ours).
    let mut p = if kind == 1 {
        // Bytes need no alignment: straight from the name.
        // SAFETY: see above; `data` holds `data.len()` UCS-1 code units.
        unsafe {
            ffi::PyUnicode_FromKindAndData(
                ffi::PyUnicode_1BYTE_KIND as c_int,
                data.as_ptr().cast(),
                data.len() as ffi::Py_ssize_t,
            )
        }
    } else {
        // Wider code units, copied to a buffer aligned for them (the name may not be).
        let units: Vec<u32> = if kind == 2 {
            data.chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect()
        } else {
            data.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        // SAFETY: see above; `units` holds `units.len()` aligned UCS-4 code units.
        unsafe {
            ffi::PyUnicode_FromKindAndData(
                ffi::PyUnicode_4BYTE_KIND as c_int,
                units.as_ptr().cast(),
                units.len() as ffi::Py_ssize_t,
            )
        }
    };
    if !p.is_null() {
        // SAFETY: as above.
        unsafe { ffi::PyUnicode_InternInPlace(&raw mut p) };
    }
    p
}

/// `frozenset(tuple)`; null with an exception set on failure.
///
/// # Safety
/// GIL held; `tuple` is a valid tuple object.
pub(crate) unsafe fn frozenset_from(tuple: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: documented API, GIL held, valid argument.
    unsafe { ffi::PyFrozenSet_New(tuple) }
}

/// Whether the running interpreter is the main one (archives are per process and code
/// objects are mutated by the interpreter: sub-interpreters must not share them).
pub(crate) fn in_main_interpreter() -> bool {
    // SAFETY: both are plain getters; called with the GIL held (from pyo3 functions).
    unsafe { ffi::PyInterpreterState_Get() == ffi::PyInterpreterState_Main() }
}

/// Reserve `n` consecutive function versions from the interpreter's counter (3.13:
/// `interp->func_state.next_version`, at the probed `offset`), returning the first, or
/// `None` when the counter is exhausted.
///
/// # Safety
/// GIL held; `offset` is the probed offset of the `u32` counter inside
/// `PyInterpreterState` for this exact interpreter build, validated by
/// [`version_counter_self_check`].
pub(crate) unsafe fn reserve_versions(offset: usize, n: u32) -> Option<u32> {
    // SAFETY: per the contract, the counter lives at this offset of the current
    // interpreter state, which is alive while the GIL is held.
    unsafe {
        let ctr = ffi::PyInterpreterState_Get()
            .cast::<u8>()
            .add(offset)
            .cast::<u32>();
        let first = ctr.read_unaligned();
        let end = first.checked_add(n)?;
        if first == 0 {
            return None;
        }
        ctr.write_unaligned(end);
        Some(first)
    }
}

/// Confirm that the probed offset really is the function-version counter: make a code
/// object and check that it took the counter's value and advanced it by one.
///
/// # Safety
/// GIL held; `offset` lies inside `PyInterpreterState` (from the probe of this build);
/// `version_field` is the offset of `co_version` in code objects (verified layout).
pub(crate) unsafe fn version_counter_self_check(offset: usize, version_field: usize) -> bool {
    // SAFETY: as above; PyCode_NewEmpty is documented API returning a new reference that
    // we release; the reads are inside live objects.
    unsafe {
        let ctr = ffi::PyInterpreterState_Get()
            .cast::<u8>()
            .add(offset)
            .cast::<u32>();
        let before = ctr.read_unaligned();
        let co = ffi::PyCode_NewEmpty(c"pycds".as_ptr(), c"probe".as_ptr(), 1);
        if co.is_null() {
            ffi::PyErr_Clear();
            return false;
        }
        let v = co
            .cast::<u8>()
            .add(version_field)
            .cast::<u32>()
            .read_unaligned();
        let after = ctr.read_unaligned();
        ffi::Py_DECREF(co.cast());
        before != 0 && v == before && after == before.wrapping_add(1)
    }
}

/// Set a code object's `co_version`.
///
/// # Safety
/// GIL held; `code` is an archived code object not yet handed out; `field` its layout's
/// `co_version` offset.
pub(crate) unsafe fn set_code_version(code: *mut u8, field: usize, v: u32) {
    // SAFETY: inside the object per the verified layout.
    unsafe { code.add(field).cast::<u32>().write_unaligned(v) }
}

/// `Py_TYPE(o)`.
pub(crate) fn type_of(o: *mut ffi::PyObject) -> *mut ffi::PyTypeObject {
    // SAFETY: callers pass live objects they hold a reference to (pyo3 `Bound`).
    unsafe { ffi::Py_TYPE(o) }
}

/// Which of `None`, `True`, `False`, `Ellipsis` `o` is, if any.
pub(crate) fn singleton_kind(o: *mut ffi::PyObject) -> Option<ExternKind> {
    // SAFETY: these getters return the addresses of the interpreter's static
    // singletons; nothing is dereferenced.
    let (n, t, f, e) = unsafe {
        (
            ffi::Py_None(),
            ffi::Py_True(),
            ffi::Py_False(),
            ffi::Py_Ellipsis(),
        )
    };
    match o {
        _ if o == n => Some(ExternKind::None),
        _ if o == t => Some(ExternKind::True),
        _ if o == f => Some(ExternKind::False),
        _ if o == e => Some(ExternKind::Ellipsis),
        _ => None,
    }
}

/// `(tp_basicsize, tp_itemsize)` of the exported type object for a tag.
pub(crate) fn type_sizes(t: TypeTag) -> (isize, isize) {
    let ty = type_object(t);
    // SAFETY: `ty` is the address of an exported, statically allocated type object that
    // lives for the whole process; reading two of its fields under the GIL (callers hold
    // it) races with nothing: CPython never changes them after initialisation.
    unsafe { ((*ty).tp_basicsize, (*ty).tp_itemsize) }
}
