//! Writing CPython objects into an arena, in the exact in-memory layout of the target
//! interpreter, with every runtime cache reset (see `spec/python-profile.md`).

use std::collections::HashMap;
use std::path::Path;

use pycds_arena::{ArenaBuilder, ExternId, SpanId};

use crate::error::PyFormatError;
use crate::externs::{
    interned_str_name, parse_interned_str, ExternKind, TypeTag, SMALL_INT_MAX, SMALL_INT_MIN,
};
use crate::layout::{state, Layout, LONG_BITS_IN_DIGIT};
use crate::meta::{encode_root_meta, encode_span_lists, encode_span_meta, RootKind};
use crate::profile::{archive_meta, Fingerprint};

/// A reference to a written (or external) object, to be stored in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjRef {
    /// An object in the current span, at this base-relative offset.
    Internal(u64),
    /// A runtime object.
    External(ExternId),
    /// A frozenset, rebuilt at load from the members tuple (`None`: empty).
    FrozenSet(Option<u64>),
}

/// A str's characters in CPython's compact representation.
#[derive(Clone, Copy, Debug)]
pub struct StrData<'a> {
    /// 1, 2 or 4 bytes per code point.
    pub kind: u8,
    /// All code points < 128 (then `kind` is 1).
    pub ascii: bool,
    /// Number of code points.
    pub length: usize,
    /// `length * kind` bytes of little-endian code points (no terminator).
    pub data: &'a [u8],
}

/// Builds an archive of CPython objects for one interpreter layout.
pub struct PyArchiveWriter {
    arena: ArenaBuilder,
    layout: &'static Layout,
    types: [ExternId; 7],
    externs: HashMap<ExternKind, ExternId>,
    open: Option<OpenSpan>,
}

struct OpenSpan {
    id: SpanId,
    start: u64,
    frozen: Vec<u32>,
    codes: Vec<u32>,
    objects: u32,
    /// A transient span: the offsets of its objects (listed in its trailer).
    transient: Option<Vec<u32>>,
    strings: HashMap<(u8, Vec<u8>), u64>,
    bytes: HashMap<Vec<u8>, u64>,
}

impl PyArchiveWriter {
    /// A writer for `layout`, stamping the archive with `fingerprint`; `client_meta` is
    /// stored after the fingerprint in the archive metadata.
    pub fn new(layout: &'static Layout, fingerprint: &Fingerprint, client_meta: &[u8]) -> Self {
        let mut arena = ArenaBuilder::new(fingerprint.profile());
        arena.set_producer(concat!("pycds ", env!("CARGO_PKG_VERSION")));
        arena.set_archive_meta(&archive_meta(fingerprint, client_meta));
        let types = TypeTag::ALL.map(|t| arena.extern_id(ExternKind::Type(t).name().as_bytes()));
        PyArchiveWriter {
            arena,
            layout,
            types,
            externs: HashMap::new(),
            open: None,
        }
    }

    /// The layout written.
    pub fn layout(&self) -> &'static Layout {
        self.layout
    }

    /// A runtime object reference. Not for [`ExternKind::InternedStr`], whose name carries the
    /// string: [`PyArchiveWriter::str_obj`] makes those (given it here, the archive would fail
    /// its self-check).
    pub fn external(&mut self, kind: ExternKind) -> ObjRef {
        debug_assert!(
            kind != ExternKind::InternedStr,
            "use str_obj for interned strings"
        );
        let arena = &mut self.arena;
        let id = *self
            .externs
            .entry(kind)
            .or_insert_with(|| arena.extern_id(kind.name().as_bytes()));
        ObjRef::External(id)
    }

    /// Start a span (one module, or one saved root). Objects written until
    /// [`PyArchiveWriter::end_span`] belong to it; references may only point inside it.
    pub fn begin_span(&mut self) {
        self.begin(&[], false);
    }

    /// Start a *transient* span (see [`crate::meta`]) for the module whose ordinary span is
    /// `module`: its objects get [`Layout::transient_refcnt`] and are listed in its trailer,
    /// and tuple items written into it may refer to objects of `module` (pass their
    /// [`ObjRef::Internal`] offsets); every other reference must point inside it.
    pub fn begin_transient_span(&mut self, module: SpanId) {
        self.begin(&[module], true);
    }

    fn begin(&mut self, deps: &[SpanId], transient: bool) {
        assert!(self.open.is_none(), "a span is already open");
        let id = self.arena.begin_span(deps);
        let start = self.arena.alloc(0, 8);
        self.open = Some(OpenSpan {
            id,
            start,
            frozen: Vec::new(),
            codes: Vec::new(),
            objects: 0,
            transient: transient.then(Vec::new),
            strings: HashMap::new(),
            bytes: HashMap::new(),
        });
    }

    /// Close the current span.
    pub fn end_span(&mut self) -> SpanId {
        let open = self.open.take().expect("no open span");
        let mut frozen = open.frozen;
        frozen.sort_unstable();
        let mut codes = open.codes;
        codes.sort_unstable();
        // (Objects are allocated in increasing order: the list is sorted.)
        let listed = open.transient.as_deref().unwrap_or(&[]);
        // The lists end the span (read with it at load, not with the tables at open).
        let lists = encode_span_lists(&frozen, &codes, listed);
        let at = self.arena.alloc(lists.len(), 8);
        self.put(at, &lists);
        // (A span over 4 GiB cannot be described; the self-check before publishing refuses it.)
        let rel = u32::try_from(at - open.start).unwrap_or(u32::MAX);
        self.arena.end_span(&encode_span_meta(
            frozen.len(),
            codes.len(),
            open.objects,
            rel,
            open.transient.is_some(),
        ))
    }

    /// The span being written (`None` between spans).
    pub fn open_span(&self) -> Option<SpanId> {
        self.open.as_ref().map(|o| o.id)
    }

    fn open(&mut self) -> &mut OpenSpan {
        self.open.as_mut().expect("no open span")
    }

    fn rel(&self, off: u64) -> Result<u32, PyFormatError> {
        let start = self.open.as_ref().expect("no open span").start;
        u32::try_from(off - start).map_err(|_| PyFormatError::Unsupported {
            what: "span larger than 4 GiB".into(),
        })
    }

    /// Allocate an object of `size` bytes with the common header.
    fn object(&mut self, tag: TypeTag, size: usize, gc_head: bool) -> u64 {
        let l = self.layout;
        let total = size + if gc_head { l.gc_head } else { 0 };
        let base = self.arena.alloc(total.next_multiple_of(8), 8);
        let obj = base + if gc_head { l.gc_head as u64 } else { 0 };
        let transient = self.open().transient.is_some();
        self.put_u64(
            obj,
            if transient {
                l.transient_refcnt
            } else {
                l.refcnt
            },
        );
        let ty = self.types[tag as usize - 1];
        self.arena.set_external(obj + l.ob_type as u64, ty);
        // (The span's size is checked before publishing; an offset past 4 GiB fails there.)
        let rel = u32::try_from(obj - self.open().start).unwrap_or(u32::MAX);
        let open = self.open();
        open.objects += 1;
        if let Some(list) = &mut open.transient {
            list.push(rel);
        }
        obj
    }

    fn put(&mut self, off: u64, bytes: &[u8]) {
        self.arena
            .bytes_mut(off, bytes.len())
            .copy_from_slice(bytes);
    }

    fn put_u64(&mut self, off: u64, v: u64) {
        self.put(off, &v.to_le_bytes());
    }

    fn put_slot(&mut self, slot: u64, r: ObjRef) -> Result<(), PyFormatError> {
        match r {
            ObjRef::Internal(t) => self.arena.set_internal(slot, t),
            ObjRef::External(id) => self.arena.set_external(slot, id),
            ObjRef::FrozenSet(members) => {
                match members {
                    Some(t) => self.arena.set_internal(slot, t),
                    None => {
                        let ObjRef::External(id) = self.external(ExternKind::EmptyTuple) else {
                            unreachable!()
                        };
                        self.arena.set_external(slot, id)
                    }
                }
                let rel = self.rel(slot)?;
                self.open().frozen.push(rel);
            }
        }
        Ok(())
    }

    /// A `str` object (or its runtime singleton). `intern`: CPython had it interned; it
    /// then becomes an extern ([`ExternKind::InternedChar`], [`ExternKind::InternedStr`]),
    /// one per archive, which the loader creates and interns when a span first uses it.
    pub fn str_obj(&mut self, s: StrData<'_>, intern: bool) -> Result<ObjRef, PyFormatError> {
        let k = s.kind as usize;
        if !matches!(k, 1 | 2 | 4)
            || s.data.len() != s.length * k
            || (s.ascii && (k != 1 || s.data.iter().any(|&b| b >= 0x80)))
        {
            return Err(PyFormatError::Unsupported {
                what: "inconsistent str representation".into(),
            });
        }
        if s.length == 0 {
            return Ok(self.external(ExternKind::EmptyStr));
        }
        if s.length == 1 && k == 1 {
            let c = s.data[0];
            return Ok(self.external(if intern {
                ExternKind::InternedChar(c)
            } else {
                ExternKind::Char(c)
            }));
        }
        if intern {
            let name = interned_str_name(s.kind, s.data);
            // Not the narrowest kind for its characters (never made by CPython): refused here,
            // for its module alone, rather than by the whole archive at load.
            if parse_interned_str(&name).is_none() {
                return Err(PyFormatError::Unsupported {
                    what: "str not in its canonical (narrowest) representation".into(),
                });
            }
            let id = self.arena.extern_id(&name);
            return Ok(ObjRef::External(id));
        }
        let key = (s.kind, s.data.to_vec());
        if let Some(&off) = self.open().strings.get(&key) {
            return Ok(ObjRef::Internal(off));
        }
        let l = self.layout;
        let size = l
            .str_size(s.ascii, k, s.length)
            .ok_or_else(|| PyFormatError::Unsupported {
                what: "str too large".into(),
            })?;
        let obj = self.object(TypeTag::Str, size, false);
        let st = &l.str_;
        self.put_u64(obj + st.length as u64, s.length as u64);
        self.put_u64(obj + st.hash as u64, u64::MAX); // -1: not computed
        let mut bits = (u32::from(s.kind) << state::KIND_SHIFT) | state::COMPACT;
        if s.ascii {
            bits |= state::ASCII;
        }
        if st.bit7_set {
            bits |= state::BIT7;
        }
        self.put(obj + st.state as u64, &bits.to_le_bytes());
        let data = obj + l.str_data(s.ascii) as u64;
        self.put(data, s.data);
        if let (Some(wstr), Some(wlen)) = (st.wstr, st.wstr_length) {
            // 3.11: for the kind as wide as wchar_t (UCS4 on Linux), PyUnicode_New points
            // wstr at the data itself.
            if k == 4 {
                self.arena.set_internal(obj + wstr as u64, data);
                self.put_u64(obj + wlen as u64, s.length as u64);
            }
        }
        self.open().strings.insert(key, obj);
        Ok(ObjRef::Internal(obj))
    }

    /// A `bytes` object (or its runtime singleton).
    pub fn bytes_obj(&mut self, data: &[u8]) -> Result<ObjRef, PyFormatError> {
        match data {
            [] => return Ok(self.external(ExternKind::EmptyBytes)),
            [b] => return Ok(self.external(ExternKind::Byte(*b))),
            _ => {}
        }
        if let Some(&off) = self.open().bytes.get(data) {
            return Ok(ObjRef::Internal(off));
        }
        let l = self.layout;
        let size = l
            .bytes_size(data.len())
            .ok_or_else(|| PyFormatError::Unsupported {
                what: "bytes too large".into(),
            })?;
        let obj = self.object(TypeTag::Bytes, size, false);
        self.put_u64(obj + l.ob_size as u64, data.len() as u64);
        self.put_u64(obj + l.bytes_hash as u64, u64::MAX);
        self.put(obj + l.bytes_data as u64, data);
        self.open().bytes.insert(data.to_vec(), obj);
        Ok(ObjRef::Internal(obj))
    }

    /// An `int` from its sign and normalised little-endian 30-bit digits (no leading
    /// zero digit; zero has no digits).
    pub fn int_obj(&mut self, negative: bool, digits: &[u32]) -> Result<ObjRef, PyFormatError> {
        if digits.last() == Some(&0) || digits.iter().any(|&d| d >> LONG_BITS_IN_DIGIT != 0) {
            return Err(PyFormatError::Unsupported {
                what: "int digits not normalised".into(),
            });
        }
        if digits.len() <= 1 {
            let v = i64::from(digits.first().copied().unwrap_or(0));
            let v = if negative { -v } else { v };
            if (SMALL_INT_MIN..=SMALL_INT_MAX).contains(&v) {
                return Ok(self.external(ExternKind::SmallInt(v as i16)));
            }
        }
        let l = self.layout;
        let n = digits.len();
        let size = l.int_size(n).ok_or_else(|| PyFormatError::Unsupported {
            what: "int too large".into(),
        })?;
        let obj = self.object(TypeTag::Int, size, false);
        let tag: u64 = if l.long_lv_tag {
            ((n as u64) << 3) | if negative { 2 } else { 0 }
        } else if negative {
            (n as i64).wrapping_neg() as u64
        } else {
            n as u64
        };
        self.put_u64(obj + l.long_tag as u64, tag);
        for (i, d) in digits.iter().enumerate() {
            self.put(obj + (l.long_digits + 4 * i) as u64, &d.to_le_bytes());
        }
        Ok(ObjRef::Internal(obj))
    }

    /// A `float`.
    pub fn float_obj(&mut self, v: f64) -> ObjRef {
        let l = self.layout;
        let obj = self.object(TypeTag::Float, l.float_size, false);
        self.put(obj + l.float_value as u64, &v.to_le_bytes());
        ObjRef::Internal(obj)
    }

    /// A `complex`.
    pub fn complex_obj(&mut self, re: f64, im: f64) -> ObjRef {
        let l = self.layout;
        let obj = self.object(TypeTag::Complex, l.complex_size, false);
        self.put(obj + l.complex_value as u64, &re.to_le_bytes());
        self.put(obj + l.complex_value as u64 + 8, &im.to_le_bytes());
        ObjRef::Internal(obj)
    }

    /// A `tuple` (an untracked GC object: zeroed `PyGC_Head` in front).
    pub fn tuple_obj(&mut self, items: &[ObjRef]) -> Result<ObjRef, PyFormatError> {
        if items.is_empty() {
            return Ok(self.external(ExternKind::EmptyTuple));
        }
        let l = self.layout;
        let size = l
            .tuple_size(items.len())
            .ok_or_else(|| PyFormatError::Unsupported {
                what: "tuple too large".into(),
            })?;
        let obj = self.object(TypeTag::Tuple, size, true);
        self.put_u64(obj + l.ob_size as u64, items.len() as u64);
        for (i, it) in items.iter().enumerate() {
            self.put_slot(obj + (l.tuple_items + 8 * i) as u64, *it)?;
        }
        Ok(ObjRef::Internal(obj))
    }

    /// A `frozenset` constant: its members are archived as a tuple; the set is built at
    /// load. Only valid as a tuple item or a root.
    pub fn frozenset_obj(&mut self, members: &[ObjRef]) -> Result<ObjRef, PyFormatError> {
        Ok(match self.tuple_obj(members)? {
            ObjRef::Internal(t) => ObjRef::FrozenSet(Some(t)),
            _ => ObjRef::FrozenSet(None),
        })
    }

    /// A `code` object. `raw` is the live object's memory (`basicsize + 2 * ob_size`
    /// bytes) of a code object that never ran (fresh from `marshal` or the compiler);
    /// `fields` are its nine object fields in [`crate::layout::CodeField`] order.
    pub fn code_obj(&mut self, raw: &[u8], fields: [ObjRef; 9]) -> Result<ObjRef, PyFormatError> {
        let l = self.layout;
        let c = &l.code;
        if raw.len() < c.adaptive || (raw.len() - c.adaptive) % 2 != 0 {
            return Err(PyFormatError::Unsupported {
                what: "code object bytes of the wrong size".into(),
            });
        }
        let units = (raw.len() - c.adaptive) / 2;
        let declared =
            u64::from_le_bytes(raw[l.ob_size..l.ob_size + 8].try_into().unwrap_or_default());
        if declared != units as u64 || units == 0 {
            return Err(PyFormatError::Unsupported {
                what: "code object size does not match ob_size".into(),
            });
        }
        if fields.iter().any(|f| matches!(f, ObjRef::FrozenSet(_))) {
            return Err(PyFormatError::Unsupported {
                what: "frozenset in a code object field".into(),
            });
        }
        let obj = self.object(TypeTag::Code, raw.len(), false);
        // Everything after the object header as the live object has it...
        self.put(obj + 16, &raw[16..]);
        // ...then the runtime state reset.
        for &w in c.zeroed_words {
            self.put_u64(obj + w as u64, 0);
        }
        for &h in c.zeroed_i16 {
            self.put(obj + h as u64, &0i16.to_le_bytes());
        }
        if let Some(v) = c.version {
            self.put(obj + v as u64, &0u32.to_le_bytes());
        }
        if let (Some(w), Some(init)) = (c.warmup, l.quickening_warmup) {
            self.put(obj + w as u64, &init.to_le_bytes());
        }
        for (off, f) in c.pointer_fields().into_iter().zip(fields) {
            self.put_u64(obj + off as u64, 0);
            self.put_slot(obj + off as u64, f)?;
        }
        let rel = self.rel(obj)?;
        self.open().codes.push(rel);
        Ok(ObjRef::Internal(obj))
    }

    /// Name a root. Values that are not objects of the span (singletons, frozensets) are
    /// wrapped in a 1-tuple holder.
    pub fn add_root(
        &mut self,
        name: &[u8],
        value: ObjRef,
        client_meta: &[u8],
    ) -> Result<(), PyFormatError> {
        let span = self
            .open
            .as_ref()
            .expect("roots are added while their span is open")
            .id;
        let (kind, obj) = match value {
            ObjRef::Internal(o) => (RootKind::Object, o),
            other => {
                // A 1-tuple cannot be the empty-tuple singleton, so this is Internal.
                let ObjRef::Internal(holder) = self.tuple_obj(&[other])? else {
                    unreachable!()
                };
                (RootKind::Holder, holder)
            }
        };
        let meta = encode_root_meta(kind, client_meta);
        self.arena.add_root(name, obj, span, &meta);
        Ok(())
    }

    /// Bytes of heap written so far.
    pub fn heap_len(&self) -> u64 {
        self.arena.heap_len()
    }

    /// The finished archive.
    pub fn finish(self) -> Result<Vec<u8>, PyFormatError> {
        assert!(self.open.is_none(), "a span is still open");
        Ok(self.arena.finish()?)
    }

    /// Publish the archive at `path` atomically (temp file, fsync, rename); returns its size.
    pub fn write_atomic(self, path: &Path) -> Result<u64, PyFormatError> {
        assert!(self.open.is_none(), "a span is still open");
        Ok(self.arena.write_atomic(path)?)
    }
}
