//! Structural check of one span before the interpreter sees it.
//!
//! The arena has already checked the span's CRC and that every slot points inside the
//! span (or names a known extern). This module walks every object of the span in order
//! and checks that it is a well-formed CPython object of the layout: header values, size
//! fields consistent with the bytes available, runtime caches zero, every pointer field
//! a slot, every slot a pointer field, and every reference of the type the interpreter
//! assumes (`co_consts` a tuple, `co_names` a tuple of str, ...), plus the counts that
//! size frames (`co_nlocalsplus`, `co_framesize`, ...). Only then may the loader relocate
//! the span and hand its objects out. Bytecode itself is not verified (neither is it in a
//! `.pyc`): an archive is code, see `spec/security.md`.
//!
//! The walk works on word indices into the span. It records where pointer fields are in a
//! bitmap of its own and compares it with the arena's slot bitmaps once at the end (so
//! "every slot is a pointer field and every pointer field a slot" costs one pass over the
//! bitmaps, not a lookup per field). References to objects already walked are checked on
//! the spot (the writer emits children before parents), the rest after the walk.
//!
//! The result is a [`SpanPlan`]: the frozensets to build with their slots, and the code
//! objects. (Strings CPython had interned are not objects of the span but externs, see
//! [`ExternKind::InternedStr`]; the span's own strings are never interned.)

use pycds_arena::{ExternId, SpanView};

use crate::error::PyFormatError;
use crate::externs::{ExternKind, ExternTable, TypeTag};
use crate::layout::{state, Layout, LONG_BITS_IN_DIGIT};
use crate::meta::SpanMeta;

/// `CO_FAST_LOCAL`, `CO_FAST_CELL`, `CO_FAST_FREE` (the `co_localspluskinds` bits).
const CO_FAST_LOCAL: u8 = 0x20;
const CO_FAST_CELL: u8 = 0x40;
const CO_FAST_FREE: u8 = 0x80;
/// `CO_VARARGS`, `CO_VARKEYWORDS`.
const CO_VARARGS: i32 = 0x4;
const CO_VARKEYWORDS: i32 = 0x8;

/// `Checker::types`, per word: the [`TypeTag`] of the object starting there (0: none) ...
const TAG_MASK: u8 = 0x07;
/// ... and this tuple was already verified to hold only str.
const NAMES_CHECKED: u8 = 0x40;

/// What the loader must do to a span after relocation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpanPlan {
    /// Frozensets to build: (members tuple offset, or `None` for the empty tuple; range
    /// in `frozen_refs`).
    pub frozen: Vec<(Option<u64>, core::ops::Range<usize>)>,
    /// Slots that receive the frozensets, grouped per frozenset.
    pub frozen_refs: Vec<u64>,
    /// Base-relative offsets of every code object of the span.
    pub codes: Vec<u64>,
    /// Number of objects in the span.
    pub objects: usize,
    /// A transient span (module and class-body code, see [`crate::meta`]): its objects
    /// carry [`Layout::transient_refcnt`] and are listed in its trailer.
    pub transient: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Any,
    Tuple,
    TupleOfStr,
    Str,
    Bytes,
}

impl Expect {
    fn describe(self) -> &'static str {
        match self {
            Expect::Any => "an archived constant",
            Expect::Tuple => "a tuple",
            Expect::TupleOfStr => "a tuple of str",
            Expect::Str => "a str",
            Expect::Bytes => "a bytes object",
        }
    }

    fn accepts(self, t: TypeTag) -> bool {
        match self {
            Expect::Any => true,
            Expect::Tuple | Expect::TupleOfStr => t == TypeTag::Tuple,
            Expect::Str => t == TypeTag::Str,
            Expect::Bytes => t == TypeTag::Bytes,
        }
    }

    /// Whether an extern of kind `k` may stand in a field expecting `self`.
    fn accepts_extern(self, k: ExternKind) -> bool {
        match (self, k) {
            (_, ExternKind::Type(_)) => false,
            (Expect::Any, _) => true,
            (Expect::Tuple | Expect::TupleOfStr, ExternKind::EmptyTuple) => true,
            (
                Expect::Str,
                ExternKind::EmptyStr
                | ExternKind::Char(_)
                | ExternKind::InternedChar(_)
                | ExternKind::InternedStr,
            ) => true,
            (Expect::Bytes, ExternKind::EmptyBytes | ExternKind::Byte(_)) => true,
            _ => false,
        }
    }
}

/// The counts of a code object, checked against its name tables after the walk.
struct PendingCode {
    /// word index of the object
    obj: usize,
    nlocalsplus: i32,
    nlocals: i32,
    ncellvars: i32,
    nfreevars: i32,
    nplaincellvars: Option<i32>,
    argcount: i32,
    kwonly: i32,
    flags: i32,
}

impl core::fmt::Debug for PendingCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PendingCode@word {}", self.obj)
    }
}

/// Reusable checker (keeps its scratch buffers between spans, so checking allocates
/// nothing per object).
#[derive(Debug)]
pub struct Checker {
    layout: &'static Layout,
    /// per word of the span: tag of the object starting there, plus flags
    types: Vec<u8>,
    /// bitmap, one bit per word: the pointer fields found by the walk
    expect: Vec<u64>,
    /// bitmap, one bit per word: tuple items (the only place a frozenset may go)
    items: Vec<u64>,
    /// (slot word, target word, expectation) for forward internal references
    pending: Vec<(usize, usize, Expect)>,
    codes: Vec<PendingCode>,
    /// first word of the object being walked (references below it are checked at once)
    cur: usize,
    /// the dependency a transient span's tuple items and str fields may refer to (start,
    /// length)
    dep: Option<(u64, u64)>,
    /// `types` of the span checked before the current one, and that span (start, length)
    /// if its check passed
    prev_types: Vec<u8>,
    prev_span: Option<(u64, u64)>,
    /// references of a transient span into its dependency `(slot, target, expected type)`
    /// (absolute offsets) still to check against the dependency's objects, and that
    /// dependency
    cross: Vec<(u64, u64, Expect)>,
    cross_dep: Option<(u64, u64)>,
}

pub(crate) fn bad(offset: u64, what: &'static str) -> PyFormatError {
    PyFormatError::BadObject { offset, what }
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn le_i16(b: &[u8], at: usize) -> Option<i16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(i16::from_le_bytes(s.try_into().ok()?))
}

fn bit(bitmap: &[u8], w: usize) -> bool {
    bitmap.get(w >> 3).is_some_and(|b| (b >> (w & 7)) & 1 == 1)
}

fn set_bit(bitmap: &mut [u64], w: usize) {
    if let Some(c) = bitmap.get_mut(w >> 6) {
        *c |= 1 << (w & 63);
    }
}

fn tag_of(t: u8) -> Option<TypeTag> {
    TypeTag::from_u8(t & TAG_MASK)
}

/// The span under check: its bytes and slot bitmaps, addressed by span-relative byte
/// offsets (`b`) or word indices (`w`); errors carry base-relative offsets.
pub(crate) struct Span<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) internal: &'a [u8],
    pub(crate) external: &'a [u8],
    pub(crate) start: u64,
    pub(crate) len: u64,
}

impl<'a> Span<'a> {
    pub(crate) fn of(view: &SpanView<'a>) -> Span<'a> {
        Span {
            bytes: view.bytes(),
            internal: view.internal_bitmap(),
            external: view.external_bitmap(),
            start: view.start(),
            len: view.len(),
        }
    }
    pub(crate) fn abs(&self, b: usize) -> u64 {
        self.start + b as u64
    }
    fn past_end(&self, b: usize) -> PyFormatError {
        bad(self.abs(b), "object extends past the end of its span")
    }
    pub(crate) fn word(&self, w: usize) -> Result<u64, PyFormatError> {
        let b = w.wrapping_mul(8);
        le_u64(self.bytes, b).ok_or_else(|| self.past_end(b))
    }
    pub(crate) fn u64_at(&self, b: usize) -> Result<u64, PyFormatError> {
        le_u64(self.bytes, b).ok_or_else(|| self.past_end(b))
    }
    fn u32_at(&self, b: usize) -> Result<u32, PyFormatError> {
        le_u32(self.bytes, b).ok_or_else(|| self.past_end(b))
    }
    fn i32_at(&self, b: usize) -> Result<i32, PyFormatError> {
        Ok(self.u32_at(b)? as i32)
    }
    fn i16_at(&self, b: usize) -> Result<i16, PyFormatError> {
        le_i16(self.bytes, b).ok_or_else(|| self.past_end(b))
    }
    fn slice(&self, b: usize, n: u64) -> Result<&'a [u8], PyFormatError> {
        usize::try_from(n)
            .ok()
            .and_then(|n| b.checked_add(n))
            .and_then(|e| self.bytes.get(b..e))
            .ok_or_else(|| self.past_end(b))
    }
    /// The extern id in word `w`, if it is an external slot.
    pub(crate) fn extern_at(&self, w: usize) -> Option<ExternId> {
        if bit(self.external, w) {
            // Fits in u32: the arena checked it is below the extern count.
            le_u64(self.bytes, w.wrapping_mul(8)).map(|v| ExternId(v as u32))
        } else {
            None
        }
    }
    /// The span-relative word of the object an internal slot at word `w` refers to, if `w`
    /// is an internal slot.
    pub(crate) fn internal_at(&self, w: usize) -> Option<u64> {
        if bit(self.internal, w) {
            le_u64(self.bytes, w.wrapping_mul(8))
        } else {
            None
        }
    }
    /// Word `i` of 64 of a bitmap.
    pub(crate) fn chunk(bitmap: &[u8], i: usize) -> u64 {
        le_u64(bitmap, i.wrapping_mul(8))
            .or_else(|| {
                // a short last chunk (bitmaps are whole u64 words, but stay total)
                let rest = bitmap.get(i.checked_mul(8)?..)?;
                let mut w = [0u8; 8];
                w.get_mut(..rest.len())?.copy_from_slice(rest);
                Some(u64::from_le_bytes(w))
            })
            .unwrap_or(0)
    }
}

impl Checker {
    /// A checker for `layout`.
    pub fn new(layout: &'static Layout) -> Checker {
        Checker {
            layout,
            types: Vec::new(),
            expect: Vec::new(),
            items: Vec::new(),
            pending: Vec::new(),
            codes: Vec::new(),
            cur: 0,
            dep: None,
            prev_types: Vec::new(),
            prev_span: None,
            cross: Vec::new(),
            cross_dep: None,
        }
    }

    /// Check the references a transient span makes into `dep`, whose per-word types are
    /// `types`: each must be the start of an object of the type its field requires.
    fn check_cross(
        cross: &[(u64, u64, Expect)],
        dep: (u64, u64),
        types: &[u8],
    ) -> Result<(), PyFormatError> {
        for &(slot, target, expect) in cross {
            let rel = target.wrapping_sub(dep.0);
            let ok = rel < dep.1
                && rel % 8 == 0
                && types
                    .get((rel / 8) as usize)
                    .and_then(|&t| tag_of(t))
                    .is_some_and(|tag| expect.accepts(tag));
            if !ok {
                return Err(PyFormatError::BadReference {
                    offset: slot,
                    expected: match expect {
                        Expect::Str => "a str of the module's span",
                        _ => "the start of an object of the module's span",
                    },
                });
            }
        }
        Ok(())
    }

    /// After a load: fails if a transient span's references into its dependency could not
    /// be checked (the dependency was not checked right before or after it, as a load or
    /// [`Checker::check_span`] in id order does). Clears that state.
    pub fn finish(&mut self) -> Result<(), PyFormatError> {
        self.cross_dep = None;
        if let Some(&(slot, _, _)) = self.cross.first() {
            self.cross.clear();
            return Err(PyFormatError::BadReference {
                offset: slot,
                expected: "an object of a span checked with this one",
            });
        }
        Ok(())
    }

    /// Check every object of `view`; `roots` are the base-relative root objects that
    /// live in this span (each must be an object start; a holder root a 1-tuple).
    ///
    /// `dep` is the span's single dependency (start, length), if it has exactly one: a
    /// transient span's tuple items, and the str fields of its code objects, may refer to
    /// objects of it (str objects for the latter). Those references are
    /// checked against the dependency's objects when it is checked right before this span
    /// (id order, as `pycds verify` does) or right after it (load order: a span, then its
    /// dependency); [`Checker::finish`] then fails if neither happened.
    pub fn check_span(
        &mut self,
        view: &SpanView<'_>,
        externs: &ExternTable,
        roots: &[(u64, bool)],
        dep: Option<(u64, u64)>,
    ) -> Result<SpanPlan, PyFormatError> {
        core::mem::swap(&mut self.types, &mut self.prev_types);
        let prev_span = self.prev_span.take();
        let plan = self.check_span_inner(view, externs, roots, dep, prev_span)?;
        self.prev_span = Some((view.start(), view.len()));
        Ok(plan)
    }

    fn check_span_inner(
        &mut self,
        view: &SpanView<'_>,
        externs: &ExternTable,
        roots: &[(u64, bool)],
        dep: Option<(u64, u64)>,
        prev_span: Option<(u64, u64)>,
    ) -> Result<SpanPlan, PyFormatError> {
        let start = view.start();
        let len = view.len();
        let words = usize::try_from(len / 8).map_err(|_| bad(start, "span too large"))?;
        let sp = Span::of(view);
        self.types.clear();
        self.types.resize(words, 0);
        let chunks = words.div_ceil(64);
        self.expect.clear();
        self.expect.resize(chunks, 0);
        self.items.clear();
        self.items.resize(chunks, 0);
        self.pending.clear();
        self.codes.clear();
        let mut plan = SpanPlan::default();
        let l = self.layout;

        // 1. The span metadata (where the objects end).
        let meta = SpanMeta::parse(view.meta(), view.bytes())?;
        let objects_words = (meta.objects_end() / 8) as usize;
        plan.transient = meta.transient();
        let refcnt = if plan.transient {
            l.transient_refcnt
        } else {
            l.refcnt
        };
        // Only a transient span may refer into its dependency; the last one's references
        // are still to be checked if this span is that dependency.
        let own_cross = core::mem::take(&mut self.cross);
        let own_cross_dep = self.cross_dep.take();
        self.dep = if plan.transient { dep } else { None };
        if plan.transient && dep.is_none() {
            return Err(PyFormatError::BadSpanMeta {
                what: "transient span without exactly one dependency",
            });
        }

        // 2. Walk the objects in order.
        let gc_words = l.gc_head / 8;
        let mut w = 0usize;
        while w < objects_words {
            let (obj, gc) = if sp.word(w)? == 0 {
                if sp.word(w + 1)? != 0 {
                    return Err(bad(sp.abs(8 * w + 8), "bad GC head"));
                }
                (w + gc_words, true)
            } else {
                (w, false)
            };
            self.cur = w;
            let ob = 8 * obj;
            if sp.word(obj)? != refcnt {
                return Err(bad(sp.abs(ob), "bad reference count"));
            }
            let tw = obj + l.ob_type / 8;
            let tag = match sp.extern_at(tw) {
                Some(id) => match externs.kind(id) {
                    Some(ExternKind::Type(t)) => t,
                    _ => return Err(bad(sp.abs(ob), "ob_type is not a type")),
                },
                None => return Err(bad(sp.abs(ob), "ob_type is not an external reference")),
            };
            set_bit(&mut self.expect, tw);
            if gc != (tag == TypeTag::Tuple) {
                return Err(bad(
                    sp.abs(ob),
                    "GC head on a non-tuple or tuple without GC head",
                ));
            }
            let size = match tag {
                TypeTag::Tuple => self.check_tuple(&sp, externs, obj)?,
                TypeTag::Bytes => check_bytes(&sp, l, obj)?,
                TypeTag::Str => self.check_str(&sp, obj)?,
                TypeTag::Int => check_int(&sp, l, obj)?,
                TypeTag::Float => {
                    sp.slice(ob, l.float_size as u64)?;
                    l.float_size
                }
                TypeTag::Complex => {
                    sp.slice(ob, l.complex_size as u64)?;
                    l.complex_size
                }
                TypeTag::Code => self.check_code(&sp, externs, obj)?,
            };
            let end = ob
                .checked_add(size)
                .ok_or_else(|| bad(sp.abs(ob), "size overflow"))?;
            let padded = end.next_multiple_of(8);
            if padded as u64 > len
                || sp
                    .slice(end, (padded - end) as u64)?
                    .iter()
                    .any(|&b| b != 0)
            {
                return Err(bad(sp.abs(end), "non-zero padding after object"));
            }
            if let Some(t) = self.types.get_mut(obj) {
                *t |= tag as u8;
            }
            plan.objects += 1;
            w = padded / 8;
        }

        // 3. Slots exactly at the pointer fields: the walk's bitmap equals the union of the
        //    arena's internal and external bitmaps.
        for (i, &e) in self.expect.iter().enumerate() {
            let actual = Span::chunk(sp.internal, i) | Span::chunk(sp.external, i);
            if actual != e {
                let b = (actual ^ e).trailing_zeros() as usize;
                let at = sp.abs(8 * (64 * i + b));
                return Err(if actual >> b & 1 == 1 {
                    bad(at, "slot outside any pointer field")
                } else {
                    bad(at, "pointer field is not a slot")
                });
            }
        }

        // 4. Forward references, now that every object start is known.
        let pending = core::mem::take(&mut self.pending);
        for &(slot, target, expect) in &pending {
            self.check_ref(&sp, externs, slot, target, expect)?;
        }
        self.pending = pending;

        // 5. Frozenset slots: tuple items that hold a (members) tuple.
        let mut frozen: Vec<(Option<u64>, u64)> = Vec::new();
        let mut lastf = None;
        for rel in meta.frozen() {
            let rel = rel as usize;
            if lastf.is_some_and(|x| x >= rel) || rel % 8 != 0 || rel as u64 >= meta.objects_end() {
                return Err(PyFormatError::BadSpanMeta {
                    what: "frozenset list not sorted or out of span",
                });
            }
            lastf = Some(rel);
            let sw = rel / 8;
            if self
                .items
                .get(sw >> 6)
                .map_or(true, |c| c >> (sw & 63) & 1 == 0)
            {
                return Err(PyFormatError::BadSpanMeta {
                    what: "frozenset slot is not a tuple item",
                });
            }
            let slot = sp.abs(rel);
            let members = if let Some(t) = sp.internal_at(sw) {
                let r = t.wrapping_sub(start);
                let tw = usize::try_from(r / 8).unwrap_or(usize::MAX);
                match (r < len)
                    .then(|| self.types.get(tw).and_then(|&x| tag_of(x)))
                    .flatten()
                {
                    Some(TypeTag::Tuple) => Some(t),
                    _ => None,
                }
                .map(Some)
            } else {
                sp.extern_at(sw)
                    .filter(|&id| externs.kind(id) == Some(ExternKind::EmptyTuple))
                    .map(|_| None)
            };
            let Some(members) = members else {
                return Err(PyFormatError::BadReference {
                    offset: slot,
                    expected: "a tuple of frozenset members",
                });
            };
            frozen.push((members, slot));
        }
        group_frozen(&mut plan, frozen);

        // 6. Code objects: the span metadata lists exactly them (the loader trusts that list
        //    when objects are not checked), and the counts that size frames agree with the
        //    name tables. A transient span lists every object.
        if meta.objects() as usize != plan.objects
            || !meta
                .codes()
                .map(|o| o as usize)
                .eq(self.codes.iter().map(|c| 8 * c.obj))
        {
            return Err(PyFormatError::BadSpanMeta {
                what: "object count or code list does not match the objects",
            });
        }
        if plan.transient {
            let mut listed = meta.listed().map(|o| o as usize);
            let all = self
                .types
                .iter()
                .enumerate()
                .filter(|(_, &t)| tag_of(t).is_some());
            if !all.map(|(w, _)| 8 * w).eq(&mut listed) {
                return Err(PyFormatError::BadSpanMeta {
                    what: "object list does not match the objects",
                });
            }
        }
        for c in &self.codes {
            let ob = 8 * c.obj;
            let names = code_ref_len(&sp, externs, l, c.obj + l.code.localsplusnames / 8)?;
            let kw = c.obj + l.code.localspluskinds / 8;
            let kinds: &[u8] = if let Some(t) = sp.internal_at(kw) {
                let tb = (t - start) as usize;
                let n = sp.u64_at(tb + l.ob_size)?;
                sp.slice(tb + l.bytes_data, n)?
            } else {
                match sp.extern_at(kw).and_then(|id| externs.kind(id)) {
                    Some(ExternKind::EmptyBytes) => &[],
                    Some(ExternKind::Byte(b)) => {
                        BYTE_VALUES.get(b as usize..b as usize + 1).unwrap_or(&[])
                    }
                    _ => return Err(bad(sp.abs(8 * kw), "bad co_localspluskinds")),
                }
            };
            let n = i64::from(c.nlocalsplus);
            if names != n || kinds.len() as i64 != n {
                return Err(bad(
                    sp.abs(ob),
                    "co_nlocalsplus does not match the name tables",
                ));
            }
            let count = |m: u8| kinds.iter().filter(|&&k| k & m != 0).count() as i32;
            if count(CO_FAST_LOCAL) != c.nlocals
                || count(CO_FAST_CELL) != c.ncellvars
                || count(CO_FAST_FREE) != c.nfreevars
            {
                return Err(bad(
                    sp.abs(ob),
                    "local/cell/free counts do not match co_localspluskinds",
                ));
            }
            if let Some(plain) = c.nplaincellvars {
                let arg_cells = kinds
                    .iter()
                    .filter(|&&k| {
                        k & (CO_FAST_LOCAL | CO_FAST_CELL) == CO_FAST_LOCAL | CO_FAST_CELL
                    })
                    .count() as i32;
                if plain != c.ncellvars - arg_cells {
                    return Err(bad(sp.abs(ob), "co_nplaincellvars inconsistent"));
                }
            }
            let total_args = i64::from(c.argcount)
                + i64::from(c.kwonly)
                + i64::from(c.flags & CO_VARARGS != 0)
                + i64::from(c.flags & CO_VARKEYWORDS != 0);
            if total_args > i64::from(c.nlocals) {
                return Err(bad(sp.abs(ob), "more arguments than locals"));
            }
            plan.codes.push(sp.abs(ob));
        }

        // 7. Roots.
        for &(root, holder) in roots {
            let t = root
                .checked_sub(start)
                .filter(|r| *r < len && r % 8 == 0)
                .and_then(|r| self.types.get((r / 8) as usize))
                .and_then(|&t| tag_of(t));
            let Some(t) = t else {
                return Err(bad(root, "root is not an object"));
            };
            if holder
                && (t != TypeTag::Tuple || sp.u64_at((root - start) as usize + l.ob_size)? != 1)
            {
                return Err(bad(root, "root holder is not a 1-tuple"));
            }
        }

        // 8. References into the dependency: against its objects if it was checked just
        //    before; else kept for its check, which follows in load order. And the last
        //    span's, if this is its dependency.
        if !self.cross.is_empty() {
            match (prev_span, dep) {
                (Some(p), Some(d)) if p == d => {
                    Self::check_cross(&self.cross, d, &self.prev_types)?;
                    self.cross.clear();
                }
                _ => self.cross_dep = dep,
            }
        }
        if let Some(d) = own_cross_dep {
            if d == (start, len) {
                Self::check_cross(&own_cross, d, &self.types)?;
            } else {
                return Err(PyFormatError::BadReference {
                    offset: own_cross.first().map_or(start, |c| c.0),
                    expected: "an object of a span checked with this one",
                });
            }
        }
        Ok(plan)
    }

    /// Check one internal reference (slot word `slot`, target word `target`) whose target's
    /// object start (if any) is known.
    fn check_ref(
        &mut self,
        sp: &Span<'_>,
        externs: &ExternTable,
        slot: usize,
        target: usize,
        expect: Expect,
    ) -> Result<(), PyFormatError> {
        let l = self.layout;
        let at = sp.abs(8 * slot);
        let t = self.types.get(target).copied().unwrap_or(0);
        let tag = tag_of(t).ok_or(PyFormatError::BadReference {
            offset: at,
            expected: "the start of an object",
        })?;
        if !expect.accepts(tag) {
            return Err(PyFormatError::BadReference {
                offset: at,
                expected: expect.describe(),
            });
        }
        if expect == Expect::TupleOfStr && t & NAMES_CHECKED == 0 {
            // Each name tuple is checked once, however many code objects share it.
            if let Some(x) = self.types.get_mut(target) {
                *x |= NAMES_CHECKED;
            }
            let n = sp.word(target + l.ob_size / 8)?;
            let first = target + l.tuple_items / 8;
            for i in 0..n as usize {
                let item = first + i;
                let ok = if let Some(x) = sp.internal_at(item) {
                    let r = x.wrapping_sub(sp.start);
                    r % 8 == 0
                        && r < sp.len
                        && self.types.get((r / 8) as usize).and_then(|&t| tag_of(t))
                            == Some(TypeTag::Str)
                } else if let Some(id) = sp.extern_at(item) {
                    externs.kind(id).and_then(ExternKind::value_type) == Some(TypeTag::Str)
                } else {
                    false
                };
                if !ok {
                    return Err(PyFormatError::BadReference {
                        offset: sp.abs(8 * item),
                        expected: "a str (name tuple item)",
                    });
                }
            }
        }
        Ok(())
    }
}

impl Checker {
    /// Record pointer field `w` (`item`: a tuple item, the only place a frozenset may go)
    /// and check the reference it holds.
    fn field(
        &mut self,
        sp: &Span<'_>,
        externs: &ExternTable,
        w: usize,
        expect: Expect,
        item: bool,
    ) -> Result<(), PyFormatError> {
        set_bit(&mut self.expect, w);
        if item {
            set_bit(&mut self.items, w);
        }
        if let Some(t) = sp.internal_at(w) {
            let rel = t.wrapping_sub(sp.start);
            if t < sp.start || rel >= sp.len {
                // A transient span's tuple items may refer to its dependency's objects, and
                // its code objects' str fields to its str objects (`co_filename`: the
                // module's functions' own, as after a normal import).
                if let Some((ds, dl)) = self.dep {
                    if ((item && expect == Expect::Any) || (!item && expect == Expect::Str))
                        && t.wrapping_sub(ds) < dl
                    {
                        self.cross.push((sp.abs(8 * w), t, expect));
                        return Ok(());
                    }
                }
                return Err(PyFormatError::BadReference {
                    offset: sp.abs(8 * w),
                    expected: "an object of the same span",
                });
            }
            if rel % 8 != 0 {
                return Err(PyFormatError::BadReference {
                    offset: sp.abs(8 * w),
                    expected: "the start of an object",
                });
            }
            let tw = (rel / 8) as usize;
            if tw < self.cur {
                self.check_ref(sp, externs, w, tw, expect)?;
            } else {
                self.pending.push((w, tw, expect));
            }
        } else if let Some(id) = sp.extern_at(w) {
            let k = externs
                .kind(id)
                .ok_or_else(|| bad(sp.abs(8 * w), "unknown extern"))?;
            if !expect.accepts_extern(k) {
                return Err(PyFormatError::BadReference {
                    offset: sp.abs(8 * w),
                    expected: expect.describe(),
                });
            }
        } else {
            return Err(bad(sp.abs(8 * w), "pointer field is not a slot"));
        }
        Ok(())
    }

    fn check_tuple(
        &mut self,
        sp: &Span<'_>,
        externs: &ExternTable,
        obj: usize,
    ) -> Result<usize, PyFormatError> {
        let l = self.layout;
        let n = sp.word(obj + l.ob_size / 8)?;
        if n == 0 || n > sp.len / 8 {
            return Err(bad(sp.abs(8 * obj), "bad tuple size"));
        }
        let n = n as usize;
        let size = l.tuple_items + 8 * n;
        sp.slice(8 * obj, size as u64)?;
        let first = obj + l.tuple_items / 8;
        for i in 0..n {
            self.field(sp, externs, first + i, Expect::Any, true)?;
        }
        Ok(size)
    }

    fn check_code(
        &mut self,
        sp: &Span<'_>,
        externs: &ExternTable,
        obj: usize,
    ) -> Result<usize, PyFormatError> {
        let l = self.layout;
        let c = &l.code;
        let ob = 8 * obj;
        let units = sp.word(obj + l.ob_size / 8)?;
        if units == 0 || units > sp.len / 2 {
            return Err(bad(sp.abs(ob), "bad code size"));
        }
        let size = c.adaptive + 2 * units as usize;
        sp.slice(ob, size as u64)?;
        for &z in c.zeroed_words {
            if sp.u64_at(ob + z)? != 0 {
                return Err(bad(sp.abs(ob + z), "runtime cache field not zero"));
            }
        }
        for &h in c.zeroed_i16 {
            if sp.i16_at(ob + h)? != 0 {
                return Err(bad(sp.abs(ob + h), "runtime field not zero"));
            }
        }
        if let Some(v) = c.version {
            if sp.u32_at(ob + v)? != 0 {
                return Err(bad(sp.abs(ob + v), "co_version not zero"));
            }
        }
        if let (Some(w), Some(init)) = (c.warmup, l.quickening_warmup) {
            if sp.i16_at(ob + w)? != init {
                return Err(bad(sp.abs(ob + w), "co_warmup not at its initial value"));
            }
        }
        const EXPECTS: [Expect; 9] = [
            Expect::Tuple,
            Expect::TupleOfStr,
            Expect::Bytes,
            Expect::TupleOfStr,
            Expect::Bytes,
            Expect::Str,
            Expect::Str,
            Expect::Str,
            Expect::Bytes,
        ];
        for (off, e) in c.pointer_fields().into_iter().zip(EXPECTS) {
            self.field(sp, externs, obj + off / 8, e, false)?;
        }
        let rd = |off: usize| sp.i32_at(ob + off);
        let argcount = rd(c.argcount)?;
        let posonly = rd(c.posonlyargcount)?;
        let kwonly = rd(c.kwonlyargcount)?;
        let stacksize = rd(c.stacksize)?;
        let nlocalsplus = rd(c.nlocalsplus)?;
        let nlocals = rd(c.nlocals)?;
        let ncellvars = rd(c.ncellvars)?;
        let nfreevars = rd(c.nfreevars)?;
        let flags = rd(c.flags)?;
        let firsttraceable = rd(c.firsttraceable)?;
        let nplaincellvars = c.nplaincellvars.map(rd).transpose()?;
        let all = [
            argcount,
            posonly,
            kwonly,
            stacksize,
            nlocalsplus,
            nlocals,
            ncellvars,
            nfreevars,
        ];
        if all.iter().any(|&v| !(0..=1 << 20).contains(&v)) || posonly > argcount {
            return Err(bad(sp.abs(ob), "code counts out of range"));
        }
        if firsttraceable < 0 || i64::from(firsttraceable) >= units as i64 {
            return Err(bad(sp.abs(ob), "_co_firsttraceable out of range"));
        }
        if let Some(fs) = c.framesize {
            if i64::from(rd(fs)?)
                != i64::from(nlocalsplus) + i64::from(stacksize) + i64::from(l.frame_specials)
            {
                return Err(bad(sp.abs(ob), "co_framesize inconsistent"));
            }
        }
        self.codes.push(PendingCode {
            obj,
            nlocalsplus,
            nlocals,
            ncellvars,
            nfreevars,
            nplaincellvars,
            argcount,
            kwonly,
            flags,
        });
        Ok(size)
    }

    fn check_str(&mut self, sp: &Span<'_>, obj: usize) -> Result<usize, PyFormatError> {
        let l = self.layout;
        let s = &l.str_;
        let ob = 8 * obj;
        let length = sp.u64_at(ob + s.length)?;
        if length > sp.len {
            return Err(bad(sp.abs(ob), "bad str length"));
        }
        if sp.u64_at(ob + s.hash)? != u64::MAX {
            return Err(bad(sp.abs(ob + s.hash), "str hash not reset"));
        }
        let st = sp.u32_at(ob + s.state)?;
        let kind = (st >> state::KIND_SHIFT) & state::KIND_MASK;
        let ascii = st & state::ASCII != 0;
        if st & state::INTERNED_MASK != 0
            || st & state::COMPACT == 0
            || !matches!(kind, 1 | 2 | 4)
            || (ascii && kind != 1)
            || (st & state::BIT7 != 0) != s.bit7_set
            || st >> 8 != 0
        {
            return Err(bad(sp.abs(ob + s.state), "bad str state"));
        }
        let k = u64::from(kind);
        let data_off = l.str_data(ascii);
        let size = data_off as u64 + (length + 1) * k;
        let data = sp.slice(ob + data_off, (length + 1) * k)?;
        let (body, nul) = data.split_at((length * k) as usize);
        if nul.iter().any(|&b| b != 0) {
            return Err(bad(sp.abs(ob), "str not NUL-terminated"));
        }
        if !ascii && (sp.u64_at(ob + s.utf8_length)? != 0 || sp.u64_at(ob + s.utf8)? != 0) {
            return Err(bad(sp.abs(ob), "str utf8 cache not reset"));
        }
        if let Some(wo) = s.wstr {
            if kind == 4 && !ascii {
                // 3.11: the UCS4 wstr is the data itself (an internal slot to it).
                let ww = obj + wo / 8;
                if sp.internal_at(ww) != Some(sp.abs(ob + data_off)) {
                    return Err(bad(sp.abs(ob + wo), "3.11 wstr must point at the data"));
                }
                set_bit(&mut self.expect, ww);
                if let Some(wl) = s.wstr_length {
                    if sp.u64_at(ob + wl)? != length {
                        return Err(bad(sp.abs(ob + wl), "3.11 wstr_length"));
                    }
                }
            } else {
                if sp.u64_at(ob + wo)? != 0 {
                    return Err(bad(sp.abs(ob + wo), "3.11 wstr not NULL"));
                }
                if let (Some(wl), false) = (s.wstr_length, ascii) {
                    if sp.u64_at(ob + wl)? != 0 {
                        return Err(bad(sp.abs(ob + wl), "3.11 wstr_length not zero"));
                    }
                }
            }
        }
        // The kind must be the narrowest that holds the widest character (CPython's
        // invariant: equal strings have equal kinds).
        let ok = match (kind, ascii) {
            (1, true) => body.is_ascii(),
            (1, false) => !body.is_ascii(),
            (2, _) => body.chunks_exact(2).any(|c| c.get(1) != Some(&0)),
            _ => {
                let mut wide = false;
                let mut valid = true;
                for c in body.chunks_exact(4) {
                    let v = le_u32(c, 0).unwrap_or(u32::MAX);
                    wide |= v >= 0x10000;
                    valid &= v <= 0x10FFFF;
                }
                wide && valid
            }
        };
        if !ok {
            return Err(bad(
                sp.abs(ob),
                "str kind does not match its widest character",
            ));
        }
        usize::try_from(size).map_err(|_| bad(sp.abs(ob), "size overflow"))
    }
}

/// Fill `plan.frozen` / `plan.frozen_refs` from `(members, slot)` pairs, grouped per
/// members tuple (one frozenset per distinct tuple).
pub(crate) fn group_frozen(plan: &mut SpanPlan, mut frozen: Vec<(Option<u64>, u64)>) {
    frozen.sort_unstable();
    let mut i = 0;
    while let Some(&(m, _)) = frozen.get(i) {
        let from = plan.frozen_refs.len();
        while let Some(&(mm, s)) = frozen.get(i) {
            if mm != m {
                break;
            }
            plan.frozen_refs.push(s);
            i += 1;
        }
        plan.frozen.push((m, from..plan.frozen_refs.len()));
    }
}

static BYTE_VALUES: [u8; 256] = {
    let mut a = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        a[i] = i as u8;
        i += 1;
    }
    a
};

/// Length of the tuple (or empty tuple) the code field at word `w` refers to.
fn code_ref_len(
    sp: &Span<'_>,
    externs: &ExternTable,
    l: &Layout,
    w: usize,
) -> Result<i64, PyFormatError> {
    if let Some(t) = sp.internal_at(w) {
        return Ok(sp.u64_at((t - sp.start) as usize + l.ob_size)? as i64);
    }
    match sp.extern_at(w).and_then(|id| externs.kind(id)) {
        Some(ExternKind::EmptyTuple) => Ok(0),
        _ => Err(bad(sp.abs(8 * w), "bad tuple reference")),
    }
}

fn check_bytes(sp: &Span<'_>, l: &Layout, obj: usize) -> Result<usize, PyFormatError> {
    let ob = 8 * obj;
    let n = sp.u64_at(ob + l.ob_size)?;
    if n > sp.len {
        return Err(bad(sp.abs(ob), "bad bytes size"));
    }
    if sp.u64_at(ob + l.bytes_hash)? != u64::MAX {
        return Err(bad(sp.abs(ob + l.bytes_hash), "bytes hash not reset"));
    }
    let data = sp.slice(ob + l.bytes_data, n + 1)?;
    if data.last() != Some(&0) {
        return Err(bad(sp.abs(ob), "bytes not NUL-terminated"));
    }
    Ok(l.bytes_data + n as usize + 1)
}

fn check_int(sp: &Span<'_>, l: &Layout, obj: usize) -> Result<usize, PyFormatError> {
    let ob = 8 * obj;
    let tag = sp.u64_at(ob + l.long_tag)?;
    let nd = if l.long_lv_tag {
        let sign = tag & 3;
        if tag & 4 != 0 || sign == 1 || sign == 3 {
            return Err(bad(sp.abs(ob), "bad int sign"));
        }
        tag >> 3
    } else {
        (tag as i64).unsigned_abs()
    };
    if nd == 0 || nd > sp.len / 4 {
        return Err(bad(sp.abs(ob), "bad int size"));
    }
    let digits = sp.slice(ob + l.long_digits, 4 * nd)?;
    let mut top = 0;
    for d in digits.chunks_exact(4) {
        top = le_u32(d, 0).unwrap_or(u32::MAX);
        if top >> LONG_BITS_IN_DIGIT != 0 {
            return Err(bad(sp.abs(ob), "int digit out of range"));
        }
    }
    if top == 0 {
        return Err(bad(sp.abs(ob), "int not normalised"));
    }
    Ok(l.long_digits + 4 * nd as usize)
}
