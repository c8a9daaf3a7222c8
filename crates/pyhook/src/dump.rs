//! From live objects to archived ones.
//!
//! Walks an object graph (exact types only: code, tuple, str, bytes, int, float,
//! complex, frozenset, and the singletons), writing each distinct object once. Code
//! objects must never have run (their bytecode may be quickened or instrumented):
//! callers pass code fresh from `marshal`/the compiler; [`Dumper::fresh`] makes such a
//! copy of arbitrary values.
//!
//! Unsafe code here is limited to calls of `crate::ffi` readers of live objects'
//! memory, each with the layout fact that makes the read in bounds.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};

use pycds_pyformat::layout::{state, CodeField};
use pycds_pyformat::{Layout, ObjRef, PyArchiveWriter, StrData, TypeTag};
use pyo3::ffi as pyffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFrozenSet, PyTuple};

use crate::error::{HookError, HookResult};
use crate::ffi;

/// marshal's own depth limit.
const MAX_DEPTH: usize = 2000;

/// `CO_NEWLOCALS`: set on the code of functions (and lambdas, generators, comprehension
/// functions), never on module or class-body code.
const CO_NEWLOCALS: i32 = 0x2;

/// A module's code split into what a normal import keeps once the body has run and what
/// it frees: the *transient* code objects (the module's own code and, through `co_consts`,
/// the bodies of its classes, recursively: code without `CO_NEWLOCALS`, which only the
/// body's single execution uses) and the *kept* roots (every other constant those code
/// objects hold: functions' code, docstrings, tuples, numbers, frozenset members).
/// The kept roots are written into the module's ordinary span first; the transient code,
/// with its private fields and `co_consts` tuples, into a transient span depending on it
/// ([`PyArchiveWriter::begin_transient_span`]).
pub struct ModuleSplit<'py> {
    /// Addresses of the transient code objects.
    transient: HashSet<usize>,
    /// The kept roots, in walk order.
    kept: Vec<Bound<'py, PyAny>>,
}

fn code_flags(o: &Bound<'_, PyAny>) -> HookResult<i32> {
    Ok(o.getattr("co_flags")?.extract()?)
}

impl<'py> ModuleSplit<'py> {
    /// The split of `value` if it is module code (a code object without `CO_NEWLOCALS`);
    /// `None` for anything else (archived whole, in one span).
    pub fn of(value: &Bound<'py, PyAny>) -> HookResult<Option<ModuleSplit<'py>>> {
        let code_type = ffi::type_object(TypeTag::Code);
        if !is_type(value, code_type) || code_flags(value)? & CO_NEWLOCALS != 0 {
            return Ok(None);
        }
        let mut transient = HashSet::new();
        let mut kept = Vec::new();
        let mut stack = vec![value.clone()];
        transient.insert(value.as_ptr() as usize);
        while let Some(code) = stack.pop() {
            for item in code.getattr("co_consts")?.try_iter()? {
                let item = item?;
                if is_type(&item, code_type) && code_flags(&item)? & CO_NEWLOCALS == 0 {
                    if transient.insert(item.as_ptr() as usize) {
                        stack.push(item);
                    }
                } else if is_type(&item, ffi::frozenset_type()) {
                    // The members tuple goes with the tuple holding the frozenset (the
                    // set itself is built at load); the members are kept.
                    for m in item.try_iter()? {
                        kept.push(m?);
                    }
                } else {
                    kept.push(item);
                }
            }
        }
        Ok(Some(ModuleSplit { transient, kept }))
    }

    /// The kept roots (write them into the module's span with [`Dumper::object`]).
    pub fn kept(&self) -> &[Bound<'py, PyAny>] {
        &self.kept
    }
}

/// Writing a transient span: the module's kept objects (already written into its span)
/// and which code objects are transient.
struct Transient<'s> {
    module: &'s HashMap<usize, ObjRef>,
    codes: &'s HashSet<usize>,
}

/// One walk over the objects of one span.
pub struct Dumper<'w, 'py, 's> {
    py: Python<'py>,
    w: &'w mut PyArchiveWriter,
    layout: &'static Layout,
    memo: HashMap<usize, ObjRef>,
    root: String,
    path: Vec<String>,
    transient: Option<Transient<'s>>,
}

fn is_type(o: &Bound<'_, PyAny>, t: *mut pyffi::PyTypeObject) -> bool {
    ffi::type_of(o.as_ptr()) == t
}

impl<'w, 'py, 's> Dumper<'w, 'py, 's> {
    /// A walker writing into the open span of `w`, for the root named `root`.
    pub fn new(py: Python<'py>, w: &'w mut PyArchiveWriter, root: &str) -> Self {
        let layout = w.layout();
        Dumper {
            py,
            w,
            layout,
            memo: HashMap::new(),
            root: root.to_owned(),
            path: Vec::new(),
            transient: None,
        }
    }

    /// A walker writing the transient span (open in `w`) of module `root`, whose kept
    /// objects were written into its span by a walker that [`Dumper::into_memo`] returned
    /// `module` for.
    pub fn transient(
        py: Python<'py>,
        w: &'w mut PyArchiveWriter,
        root: &str,
        split: &'s ModuleSplit<'py>,
        module: &'s HashMap<usize, ObjRef>,
    ) -> Self {
        let mut d = Dumper::new(py, w, root);
        d.transient = Some(Transient {
            module,
            codes: &split.transient,
        });
        d
    }

    /// What this walker wrote, by address of the live object.
    pub fn into_memo(self) -> HashMap<usize, ObjRef> {
        self.memo
    }

    /// An item of a transient code object's `co_consts`: the module's kept object, or
    /// (transient code, a frozenset's members tuple) written here.
    fn const_item(&mut self, o: &Bound<'py, PyAny>) -> HookResult<ObjRef> {
        let key = o.as_ptr() as usize;
        let frozenset = is_type(o, ffi::frozenset_type());
        // (Not a frozenset from the module's span: its members tuple must be in the span of
        // the tuple holding it, which the loader rewrites; CPython merges equal constants, so
        // a function's code in the module's span may hold the same frozenset.)
        if let (Some(t), false) = (&self.transient, frozenset) {
            if let Some(r) = t.module.get(&key) {
                return Ok(*r);
            }
        }
        if let Some(r) = self.memo.get(&key) {
            return Ok(*r);
        }
        if !frozenset {
            return self.object(o);
        }
        let s = o.cast::<PyFrozenSet>().map_err(PyErr::from)?;
        let mut items = Vec::with_capacity(s.len());
        for (i, it) in s.iter().enumerate() {
            self.path.push(format!("{{member {i}}}"));
            let r = self.const_item(&it);
            self.path.pop();
            items.push(r?);
        }
        let r = self.w.frozenset_obj(&items).map_err(|e| self.err(e))?;
        self.memo.insert(key, r);
        Ok(r)
    }

    /// The `co_consts` tuple of a transient code object.
    fn consts(&mut self, o: &Bound<'py, PyAny>) -> HookResult<ObjRef> {
        let t = o.cast::<PyTuple>().map_err(PyErr::from)?;
        let mut items = Vec::with_capacity(t.len());
        for (i, it) in t.iter().enumerate() {
            self.path.push(format!("[{i}]"));
            let r = self.const_item(&it);
            self.path.pop();
            items.push(r?);
        }
        self.w.tuple_obj(&items).map_err(|e| self.err(e))
    }

    /// A never-executed deep copy of `value` when it contains code objects (through a
    /// `marshal` round trip, which keeps every string's interned state), else `value`.
    pub fn fresh(py: Python<'py>, value: &Bound<'py, PyAny>) -> HookResult<Bound<'py, PyAny>> {
        fn has_code(o: &Bound<'_, PyAny>, depth: usize) -> bool {
            if depth > MAX_DEPTH {
                return false;
            }
            if is_type(o, ffi::type_object(TypeTag::Code)) {
                return true;
            }
            if let Ok(t) = o.cast::<PyTuple>() {
                return t.iter().any(|x| has_code(&x, depth + 1));
            }
            false
        }
        if !has_code(value, 0) {
            return Ok(value.clone());
        }
        let marshal = py.import("marshal")?;
        let data = marshal.call_method1("dumps", (value,))?;
        Ok(marshal.call_method1("loads", (data,))?)
    }

    /// Check, without writing, that every object reachable from `value` can be archived;
    /// the error names the root and the path to the first object that cannot.
    pub fn check_supported(root: &str, value: &Bound<'py, PyAny>) -> HookResult<()> {
        fn walk(o: &Bound<'_, PyAny>, path: &mut Vec<String>, root: &str) -> HookResult<()> {
            let err = |path: &Vec<String>, what: String| HookError::Unsupported {
                root: root.to_owned(),
                path: if path.is_empty() {
                    "(the value itself)".into()
                } else {
                    path.concat()
                },
                what,
            };
            if path.len() > MAX_DEPTH {
                return Err(err(path, "object graph nested too deeply".into()));
            }
            if ffi::singleton_kind(o.as_ptr()).is_some() {
                return Ok(());
            }
            let simple = [
                TypeTag::Str,
                TypeTag::Bytes,
                TypeTag::Int,
                TypeTag::Float,
                TypeTag::Complex,
            ];
            if simple.iter().any(|t| is_type(o, ffi::type_object(*t))) {
                return Ok(());
            }
            if is_type(o, ffi::type_object(TypeTag::Tuple)) || is_type(o, ffi::frozenset_type()) {
                for (i, it) in o.try_iter()?.enumerate() {
                    path.push(format!("[{i}]"));
                    walk(&it?, path, root)?;
                    path.pop();
                }
                return Ok(());
            }
            if is_type(o, ffi::type_object(TypeTag::Code)) {
                let name: String = o.getattr("co_qualname")?.extract()?;
                // The other object fields are always str, bytes and tuples of str.
                path.push(format!(" code {name:?}.co_consts"));
                walk(&o.getattr("co_consts")?, path, root)?;
                path.pop();
                return Ok(());
            }
            let tname = o
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into());
            Err(err(path, format!("unsupported type '{tname}' (pycds archives code, tuple, str, bytes, int, float, complex, frozenset, None, True, False, Ellipsis)")))
        }
        walk(value, &mut Vec::new(), root)
    }

    fn unsupported(&self, what: String) -> HookError {
        HookError::Unsupported {
            root: self.root.clone(),
            path: if self.path.is_empty() {
                "(the value itself)".into()
            } else {
                self.path.concat()
            },
            what,
        }
    }

    fn err(&self, e: pycds_pyformat::PyFormatError) -> HookError {
        self.unsupported(e.to_string())
    }

    /// Archive `o` (and everything it refers to).
    pub fn object(&mut self, o: &Bound<'py, PyAny>) -> HookResult<ObjRef> {
        let key = o.as_ptr() as usize;
        if let Some(r) = self.memo.get(&key) {
            return Ok(*r);
        }
        if self.path.len() > MAX_DEPTH {
            return Err(self.unsupported("object graph nested too deeply".into()));
        }
        let r = self.object_uncached(o)?;
        self.memo.insert(key, r);
        Ok(r)
    }

    fn object_uncached(&mut self, o: &Bound<'py, PyAny>) -> HookResult<ObjRef> {
        if let Some(k) = ffi::singleton_kind(o.as_ptr()) {
            return Ok(self.w.external(k));
        }
        let l = self.layout;
        let p = o.as_ptr();
        if is_type(o, ffi::type_object(TypeTag::Str)) {
            // SAFETY: `o` is an exact str, alive (we hold `o`); the offsets are the verified
            // layout's; the data range is `length * kind` bytes at the compact data offset,
            // inside the object for a compact str (checked via the state bits first).
            let (st, length) = unsafe {
                (
                    ffi::object_u32(p, l.str_.state),
                    ffi::object_u64(p, l.str_.length),
                )
            };
            if st & state::COMPACT == 0 {
                return Err(self.unsupported("a non-compact (legacy) str".into()));
            }
            let kind = ((st >> state::KIND_SHIFT) & state::KIND_MASK) as u8;
            let ascii = st & state::ASCII != 0;
            let start = l.str_data(ascii);
            let nbytes = length as usize * kind as usize;
            // SAFETY: see above.
            let raw = unsafe { ffi::object_bytes(p, start + nbytes) };
            let data = &raw[start..];
            let s = StrData {
                kind,
                ascii,
                length: length as usize,
                data,
            };
            return self
                .w
                .str_obj(s, st & state::INTERNED_MASK != 0)
                .map_err(|e| self.err(e));
        }
        if is_type(o, ffi::type_object(TypeTag::Bytes)) {
            let b = o.cast::<PyBytes>().map_err(PyErr::from)?;
            return self.w.bytes_obj(b.as_bytes()).map_err(|e| self.err(e));
        }
        if is_type(o, ffi::type_object(TypeTag::Int)) {
            return self.int(o);
        }
        if is_type(o, ffi::type_object(TypeTag::Float)) {
            return Ok(self.w.float_obj(o.extract::<f64>()?));
        }
        if is_type(o, ffi::type_object(TypeTag::Complex)) {
            let re: f64 = o.getattr("real")?.extract()?;
            let im: f64 = o.getattr("imag")?.extract()?;
            return Ok(self.w.complex_obj(re, im));
        }
        if is_type(o, ffi::type_object(TypeTag::Tuple)) {
            let t = o.cast::<PyTuple>().map_err(PyErr::from)?;
            let mut items = Vec::with_capacity(t.len());
            for (i, it) in t.iter().enumerate() {
                self.path.push(format!("[{i}]"));
                let r = self.object(&it);
                self.path.pop();
                items.push(r?);
            }
            return self.w.tuple_obj(&items).map_err(|e| self.err(e));
        }
        if is_type(o, ffi::frozenset_type()) {
            let s = o.cast::<PyFrozenSet>().map_err(PyErr::from)?;
            let mut items = Vec::with_capacity(s.len());
            for (i, it) in s.iter().enumerate() {
                self.path.push(format!("{{member {i}}}"));
                let r = self.object(&it);
                self.path.pop();
                items.push(r?);
            }
            return self.w.frozenset_obj(&items).map_err(|e| self.err(e));
        }
        if is_type(o, ffi::type_object(TypeTag::Code)) {
            return self.code(o);
        }
        let tname = o
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        Err(self.unsupported(format!("unsupported type '{tname}' (pycds archives code, tuple, str, bytes, int, float, complex, frozenset, None, True, False, Ellipsis)")))
    }

    fn int(&mut self, o: &Bound<'py, PyAny>) -> HookResult<ObjRef> {
        let l = self.layout;
        let p = o.as_ptr();
        // SAFETY: exact int, alive; the tag word is inside the fixed part of the object.
        let tag = unsafe { ffi::object_u64(p, l.long_tag) };
        let (negative, nd) = if l.long_lv_tag {
            (tag & 3 == 2, (tag >> 3) as usize)
        } else {
            let s = tag as i64;
            (s < 0, s.unsigned_abs() as usize)
        };
        // SAFETY: an int of `nd` digits has `nd` u32 digits after the fixed part.
        let raw = unsafe { ffi::object_bytes(p, l.long_digits + 4 * nd) };
        let digits: Vec<u32> = raw[l.long_digits..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.w.int_obj(negative, &digits).map_err(|e| self.err(e))
    }

    fn code(&mut self, o: &Bound<'py, PyAny>) -> HookResult<ObjRef> {
        let l = self.layout;
        let p = o.as_ptr();
        // SAFETY: exact code object, alive; ob_size is in the var-object header.
        let units = unsafe { ffi::object_u64(p, l.ob_size) } as usize;
        let size = l
            .code_size(units)
            .ok_or_else(|| self.unsupported("code object too large".into()))?;
        // SAFETY: a code object's allocation is basicsize + 2 * ob_size bytes (itemsize 2,
        // verified at start-up).
        let raw = unsafe { ffi::object_bytes(p, size) };
        let name: String = o.getattr("co_qualname")?.extract()?;
        let transient = self
            .transient
            .as_ref()
            .is_some_and(|t| t.codes.contains(&(p as usize)));
        let mut fields = [ObjRef::Internal(0); 9];
        for (i, (off, f)) in l
            .code
            .pointer_fields()
            .into_iter()
            .zip(pycds_pyformat::layout::CodeField::ALL)
            .enumerate()
        {
            // SAFETY: the field is a PyObject* inside the fixed part (verified layout);
            // the code object owns a reference to it, and we hold the code object.
            let ptr = unsafe { ffi::object_u64(p, off) } as *mut pyffi::PyObject;
            if ptr.is_null() {
                return Err(self.unsupported(format!("{} of code {name:?} is NULL", f.attr())));
            }
            // SAFETY: `ptr` is a live object owned by `o`.
            let child = unsafe { Bound::from_borrowed_ptr(self.py, ptr) };
            self.path.push(format!(" code {name:?}.{}", f.attr()));
            // A transient code object's file name is the module's functions' own (in the
            // kept span) when they have one, as after a normal import (marshal shares one
            // string among a module's code objects).
            let kept_file = match (&self.transient, f) {
                (Some(t), CodeField::Filename) if transient => t.module.get(&(ptr as usize)),
                _ => None,
            };
            let r = if transient && f == CodeField::Consts {
                self.consts(&child)
            } else if let Some(kept) = kept_file {
                Ok(*kept)
            } else {
                self.object(&child)
            };
            self.path.pop();
            fields[i] = r?;
        }
        self.w.code_obj(&raw, fields).map_err(|e| self.err(e))
    }
}
