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
//! The result is a [`SpanPlan`]: the strings to intern with the slots that refer to each,
//! the frozensets to build with their slots, and the code objects.

use pycds_arena::{Slot, SpanView};

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

const ROLE_TUPLE_ITEM: u8 = 1;
/// Flag in `Checker::types`: this tuple was already verified to hold only str.
const NAMES_CHECKED: u8 = 0x40;

/// What the loader must do to a span after relocation.
#[derive(Debug, Default, Clone)]
pub struct SpanPlan {
    /// Strings to intern: (base-relative offset of the str, range in `intern_refs`).
    pub interns: Vec<(u64, core::ops::Range<usize>)>,
    /// Slots (base-relative) that refer to the strings of `interns`, grouped per string.
    pub intern_refs: Vec<u64>,
    /// Frozensets to build: (members tuple offset, or `None` for the empty tuple; range
    /// in `frozen_refs`).
    pub frozen: Vec<(Option<u64>, core::ops::Range<usize>)>,
    /// Slots that receive the frozensets, grouped per frozenset.
    pub frozen_refs: Vec<u64>,
    /// Base-relative offsets of every code object of the span.
    pub codes: Vec<u64>,
    /// Number of objects in the span.
    pub objects: usize,
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
}

struct PendingCode {
    obj: u64,
    units: u64,
    nlocalsplus: i32,
    nlocals: i32,
    ncellvars: i32,
    nfreevars: i32,
    nplaincellvars: Option<i32>,
    argcount: i32,
    kwonly: i32,
    flags: i32,
}

/// Reusable checker (keeps its scratch buffers between spans, so checking allocates
/// nothing per object).
#[derive(Debug)]
pub struct Checker {
    layout: &'static Layout,
    /// per 8-byte word of the span: type tag of the object starting there
    types: Vec<u8>,
    /// per 8-byte word of the span: role of the slot there
    roles: Vec<u8>,
    /// (slot, target, expectation) for forward internal references (checked after the walk)
    pending: Vec<(u64, u64, Expect)>,
    codes: Vec<PendingCode>,
    /// per 8-byte word: index of the interned string starting there, or `u32::MAX`
    intern_idx: Vec<u32>,
    /// references per interned string
    counts: Vec<u32>,
    /// (interned string index, slot)
    redirect: Vec<(u32, u64)>,
    /// start of the object being walked (references below it are checked at once)
    cur: u64,
}

impl core::fmt::Debug for PendingCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PendingCode@{:#x}", self.obj)
    }
}

struct Ctx<'v, 'a> {
    view: &'v SpanView<'a>,
    externs: &'v ExternTable,
    start: u64,
    len: u64,
    slots_seen: u64,
}

fn bad(offset: u64, what: &'static str) -> PyFormatError {
    PyFormatError::BadObject { offset, what }
}

impl<'v, 'a> Ctx<'v, 'a> {
    fn bytes(&self, abs: u64, n: u64) -> Result<&'a [u8], PyFormatError> {
        let rel = abs
            .checked_sub(self.start)
            .ok_or_else(|| bad(abs, "outside span"))?;
        let end = rel
            .checked_add(n)
            .ok_or_else(|| bad(abs, "size overflow"))?;
        if end > self.len {
            return Err(bad(abs, "object extends past the end of its span"));
        }
        self.view
            .bytes()
            .get(rel as usize..end as usize)
            .ok_or_else(|| bad(abs, "outside span"))
    }
    fn u64(&self, abs: u64) -> Result<u64, PyFormatError> {
        let b = self.bytes(abs, 8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| bad(abs, "short read"))?,
        ))
    }
    fn i64(&self, abs: u64) -> Result<i64, PyFormatError> {
        Ok(self.u64(abs)? as i64)
    }
    fn u32(&self, abs: u64) -> Result<u32, PyFormatError> {
        let b = self.bytes(abs, 4)?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| bad(abs, "short read"))?,
        ))
    }
    fn i32(&self, abs: u64) -> Result<i32, PyFormatError> {
        Ok(self.u32(abs)? as i32)
    }
    fn i16(&self, abs: u64) -> Result<i16, PyFormatError> {
        let b = self.bytes(abs, 2)?;
        Ok(i16::from_le_bytes([b[0], b[1]]))
    }
    /// A plain word: no slot, given value.
    fn plain(&self, abs: u64, want: u64, what: &'static str) -> Result<(), PyFormatError> {
        if !matches!(self.view.slot(abs), Slot::None) || self.u64(abs)? != want {
            return Err(bad(abs, what));
        }
        Ok(())
    }
}

impl Checker {
    /// A checker for `layout`.
    pub fn new(layout: &'static Layout) -> Checker {
        Checker {
            layout,
            types: Vec::new(),
            roles: Vec::new(),
            pending: Vec::new(),
            codes: Vec::new(),
            intern_idx: Vec::new(),
            counts: Vec::new(),
            redirect: Vec::new(),
            cur: 0,
        }
    }

    /// Check every object of `view`; `roots` are the base-relative root objects that
    /// live in this span (each must be an object start; a holder root a 1-tuple).
    pub fn check_span(
        &mut self,
        view: &SpanView<'_>,
        externs: &ExternTable,
        roots: &[(u64, bool)],
    ) -> Result<SpanPlan, PyFormatError> {
        let start = view.start();
        let len = view.len();
        let words = (len / 8) as usize;
        self.types.clear();
        self.types.resize(words, 0);
        self.roles.clear();
        self.roles.resize(words, 0);
        self.pending.clear();
        self.codes.clear();
        let mut cx = Ctx {
            view,
            externs,
            start,
            len,
            slots_seen: 0,
        };
        let mut plan = SpanPlan::default();
        let l = self.layout;

        // 1. The strings to intern (from the span metadata), so that references to them
        //    can be collected during the walk.
        let meta = SpanMeta::parse(view.meta())?;
        self.intern_idx.clear();
        self.intern_idx.resize(words, u32::MAX);
        self.counts.clear();
        self.redirect.clear();
        let mut last = None;
        for rel in meta.interns() {
            let rel = u64::from(rel);
            if last.is_some_and(|x| x >= rel) || rel % 8 != 0 || rel >= len {
                return Err(PyFormatError::BadSpanMeta {
                    what: "intern list not sorted or out of span",
                });
            }
            last = Some(rel);
            self.intern_idx[(rel / 8) as usize] = self.counts.len() as u32;
            self.counts.push(0);
            plan.interns.push((start + rel, 0..0));
        }

        // 2. Walk the objects in order. The writer emits children before parents, so
        //    nearly every reference points backwards and is checked on the spot.
        let mut p = 0u64;
        while p < len {
            let abs = start + p;
            let first = cx.u64(abs)?;
            let (obj, gc) = if first == 0 {
                cx.plain(abs, 0, "bad GC head")?;
                cx.plain(abs + 8, 0, "bad GC head")?;
                (abs + l.gc_head as u64, true)
            } else {
                (abs, false)
            };
            self.cur = abs;
            cx.plain(obj, l.refcnt, "bad reference count")?;
            let tag = match view.slot(obj + l.ob_type as u64) {
                Slot::External(id) => match externs.kind(id) {
                    Some(ExternKind::Type(t)) => t,
                    _ => return Err(bad(obj, "ob_type is not a type")),
                },
                _ => return Err(bad(obj, "ob_type is not an external reference")),
            };
            cx.slots_seen += 1;
            if gc != (tag == TypeTag::Tuple) {
                return Err(bad(obj, "GC head on a non-tuple or tuple without GC head"));
            }
            let size = match tag {
                TypeTag::Tuple => self.check_tuple(&mut cx, obj)?,
                TypeTag::Bytes => check_bytes(&cx, l, obj)?,
                TypeTag::Str => check_str(&mut cx, l, obj)?,
                TypeTag::Int => check_int(&cx, l, obj)?,
                TypeTag::Float => {
                    cx.bytes(obj, l.float_size as u64)?;
                    l.float_size as u64
                }
                TypeTag::Complex => {
                    cx.bytes(obj, l.complex_size as u64)?;
                    l.complex_size as u64
                }
                TypeTag::Code => self.check_code(&mut cx, obj)?,
            };
            let end = obj + size;
            let padded = end.next_multiple_of(8);
            if padded > start + len || cx.bytes(end, padded - end)?.iter().any(|&b| b != 0) {
                return Err(bad(end, "non-zero padding after object"));
            }
            self.types[((obj - start) / 8) as usize] = tag as u8;
            plan.objects += 1;
            p = padded - start;
        }
        let total_slots = (view.internal_slots().count() + view.external_slots().count()) as u64;
        if total_slots != cx.slots_seen {
            return Err(bad(start, "slot outside any pointer field"));
        }
        for (s, _) in &plan.interns {
            if self.types[((s - start) / 8) as usize] != TypeTag::Str as u8 {
                return Err(PyFormatError::BadSpanMeta {
                    what: "intern list names a non-str",
                });
            }
        }

        // 3. Forward references, now that every object start is known.
        let pending = core::mem::take(&mut self.pending);
        for &(slot, target, expect) in &pending {
            self.check_ref(&cx, slot, target, expect)?;
        }
        self.pending = pending;

        // Group the references to interned strings per string (counting sort).
        let mut at = 0u32;
        let mut starts = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            starts.push(at);
            plan.interns[i].1 = at as usize..(at + c) as usize;
            at += c;
        }
        plan.intern_refs = vec![0; at as usize];
        for &(i, slot) in &self.redirect {
            let k = &mut starts[i as usize];
            plan.intern_refs[*k as usize] = slot;
            *k += 1;
        }

        // 4. Frozenset slots: tuple items that hold a (members) tuple.
        let mut frozen: Vec<(Option<u64>, u64)> = Vec::new();
        let mut lastf = None;
        for rel in meta.frozen() {
            let rel = u64::from(rel);
            if lastf.is_some_and(|x| x >= rel) || rel % 8 != 0 || rel >= len {
                return Err(PyFormatError::BadSpanMeta {
                    what: "frozenset list not sorted or out of span",
                });
            }
            lastf = Some(rel);
            if self.roles[(rel / 8) as usize] != ROLE_TUPLE_ITEM {
                return Err(PyFormatError::BadSpanMeta {
                    what: "frozenset slot is not a tuple item",
                });
            }
            let slot = start + rel;
            let members = match view.slot(slot) {
                Slot::Internal(t)
                    if self.types[((t - start) / 8) as usize] & !NAMES_CHECKED
                        == TypeTag::Tuple as u8 =>
                {
                    Some(t)
                }
                Slot::External(id) if externs.kind(id) == Some(ExternKind::EmptyTuple) => None,
                _ => {
                    return Err(PyFormatError::BadReference {
                        offset: slot,
                        expected: "a tuple of frozenset members",
                    })
                }
            };
            frozen.push((members, slot));
        }
        frozen.sort_unstable();
        let mut i = 0;
        while i < frozen.len() {
            let m = frozen[i].0;
            let from = plan.frozen_refs.len();
            while i < frozen.len() && frozen[i].0 == m {
                plan.frozen_refs.push(frozen[i].1);
                i += 1;
            }
            plan.frozen.push((m, from..plan.frozen_refs.len()));
        }

        // 5. Code objects: the counts that size frames agree with the name tables.
        for c in &self.codes {
            let names = code_ref_len(&cx, l, c.obj + l.code.localsplusnames as u64)?;
            let kinds_slot = c.obj + l.code.localspluskinds as u64;
            let kinds: &[u8] = match view.slot(kinds_slot) {
                Slot::Internal(t) => {
                    let n = cx.u64(t + l.ob_size as u64)?;
                    cx.bytes(t + l.bytes_data as u64, n)?
                }
                Slot::External(id) => match externs.kind(id) {
                    Some(ExternKind::EmptyBytes) => &[],
                    Some(ExternKind::Byte(b)) => {
                        BYTE_VALUES.get(b as usize..b as usize + 1).unwrap_or(&[])
                    }
                    _ => return Err(bad(kinds_slot, "bad co_localspluskinds")),
                },
                Slot::None => return Err(bad(kinds_slot, "bad co_localspluskinds")),
            };
            let n = i64::from(c.nlocalsplus);
            if names != n || kinds.len() as i64 != n {
                return Err(bad(c.obj, "co_nlocalsplus does not match the name tables"));
            }
            let count = |m: u8| kinds.iter().filter(|&&k| k & m != 0).count() as i32;
            if count(CO_FAST_LOCAL) != c.nlocals
                || count(CO_FAST_CELL) != c.ncellvars
                || count(CO_FAST_FREE) != c.nfreevars
            {
                return Err(bad(
                    c.obj,
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
                    return Err(bad(c.obj, "co_nplaincellvars inconsistent"));
                }
            }
            let total_args = i64::from(c.argcount)
                + i64::from(c.kwonly)
                + i64::from(c.flags & CO_VARARGS != 0)
                + i64::from(c.flags & CO_VARKEYWORDS != 0);
            if total_args > i64::from(c.nlocals) {
                return Err(bad(c.obj, "more arguments than locals"));
            }
            let _ = c.units;
            plan.codes.push(c.obj);
        }

        // 6. Roots.
        for &(root, holder) in roots {
            let rel = root.checked_sub(start).filter(|r| *r < len && r % 8 == 0);
            let t = rel
                .and_then(|r| self.types.get((r / 8) as usize))
                .copied()
                .unwrap_or(0);
            if t == 0 {
                return Err(bad(root, "root is not an object"));
            }
            if holder
                && (t & !NAMES_CHECKED != TypeTag::Tuple as u8
                    || cx.u64(root + l.ob_size as u64)? != 1)
            {
                return Err(bad(root, "root holder is not a 1-tuple"));
            }
        }
        Ok(plan)
    }

    /// Check one internal reference whose target's object start (if any) is known, and
    /// note it if it refers to a string to intern.
    fn check_ref(
        &mut self,
        cx: &Ctx<'_, '_>,
        slot: u64,
        target: u64,
        expect: Expect,
    ) -> Result<(), PyFormatError> {
        let start = cx.start;
        let l = self.layout;
        let rel = target - start;
        let w = (rel / 8) as usize;
        let t = if rel % 8 == 0 {
            self.types.get(w).copied().unwrap_or(0)
        } else {
            0
        };
        let tag = TypeTag::from_u8(t & !NAMES_CHECKED).ok_or(PyFormatError::BadReference {
            offset: slot,
            expected: "the start of an object",
        })?;
        if !expect.accepts(tag) {
            return Err(PyFormatError::BadReference {
                offset: slot,
                expected: expect.describe(),
            });
        }
        if expect == Expect::TupleOfStr && t & NAMES_CHECKED == 0 {
            // Each name tuple is checked once, however many code objects share it.
            self.types[w] |= NAMES_CHECKED;
            let n = cx.u64(target + l.ob_size as u64)?;
            for i in 0..n {
                let item = target + l.tuple_items as u64 + 8 * i;
                let ok = match cx.view.slot(item) {
                    Slot::Internal(x) => {
                        let r = x - start;
                        r % 8 == 0
                            && self.types.get((r / 8) as usize) == Some(&(TypeTag::Str as u8))
                    }
                    Slot::External(id) => {
                        cx.externs.kind(id).and_then(ExternKind::value_type) == Some(TypeTag::Str)
                    }
                    Slot::None => false,
                };
                if !ok {
                    return Err(PyFormatError::BadReference {
                        offset: item,
                        expected: "a str (name tuple item)",
                    });
                }
            }
        }
        if let Some(&i) = self.intern_idx.get(w) {
            if i != u32::MAX {
                self.redirect.push((i, slot));
                self.counts[i as usize] += 1;
            }
        }
        Ok(())
    }

    /// Record a pointer field; `role` marks tuple items (the only place a frozenset may go).
    fn field(
        &mut self,
        cx: &mut Ctx<'_, '_>,
        slot: u64,
        expect: Expect,
        role: u8,
    ) -> Result<(), PyFormatError> {
        match cx.view.slot(slot) {
            Slot::None => return Err(bad(slot, "pointer field is not a slot")),
            Slot::Internal(t) => {
                if t < cx.start || t >= cx.start + cx.len {
                    return Err(PyFormatError::BadReference {
                        offset: slot,
                        expected: "an object of the same span",
                    });
                }
                if t < self.cur {
                    self.check_ref(cx, slot, t, expect)?;
                } else {
                    self.pending.push((slot, t, expect));
                }
            }
            Slot::External(id) => {
                let k = cx
                    .externs
                    .kind(id)
                    .ok_or_else(|| bad(slot, "unknown extern"))?;
                let ok = match (expect, k) {
                    (_, ExternKind::Type(_)) => false,
                    (Expect::Any, _) => true,
                    (Expect::Tuple | Expect::TupleOfStr, ExternKind::EmptyTuple) => true,
                    (
                        Expect::Str,
                        ExternKind::EmptyStr | ExternKind::Char(_) | ExternKind::InternedChar(_),
                    ) => true,
                    (Expect::Bytes, ExternKind::EmptyBytes | ExternKind::Byte(_)) => true,
                    _ => false,
                };
                if !ok {
                    return Err(PyFormatError::BadReference {
                        offset: slot,
                        expected: expect.describe(),
                    });
                }
            }
        }
        self.roles[((slot - cx.start) / 8) as usize] = role;
        cx.slots_seen += 1;
        Ok(())
    }

    fn check_tuple(&mut self, cx: &mut Ctx<'_, '_>, obj: u64) -> Result<u64, PyFormatError> {
        let l = self.layout;
        let n = cx.u64(obj + l.ob_size as u64)?;
        cx.plain(obj + l.ob_size as u64, n, "bad tuple size")?;
        if n == 0 || n > cx.len / 8 {
            return Err(bad(obj, "bad tuple size"));
        }
        let size = l.tuple_items as u64 + 8 * n;
        cx.bytes(obj, size)?;
        for i in 0..n {
            self.field(
                cx,
                obj + l.tuple_items as u64 + 8 * i,
                Expect::Any,
                ROLE_TUPLE_ITEM,
            )?;
        }
        Ok(size)
    }

    fn check_code(&mut self, cx: &mut Ctx<'_, '_>, obj: u64) -> Result<u64, PyFormatError> {
        let l = self.layout;
        let c = &l.code;
        let units = cx.u64(obj + l.ob_size as u64)?;
        cx.plain(obj + l.ob_size as u64, units, "bad code size")?;
        if units == 0 || units > cx.len / 2 {
            return Err(bad(obj, "bad code size"));
        }
        let size = c.adaptive as u64 + 2 * units;
        cx.bytes(obj, size)?;
        for &w in c.zeroed_words {
            cx.plain(obj + w as u64, 0, "runtime cache field not zero")?;
        }
        for &h in c.zeroed_i16 {
            if cx.i16(obj + h as u64)? != 0 {
                return Err(bad(obj + h as u64, "runtime field not zero"));
            }
        }
        if let Some(v) = c.version {
            if cx.u32(obj + v as u64)? != 0 {
                return Err(bad(obj + v as u64, "co_version not zero"));
            }
        }
        if let (Some(w), Some(init)) = (c.warmup, l.quickening_warmup) {
            if cx.i16(obj + w as u64)? != init {
                return Err(bad(obj + w as u64, "co_warmup not at its initial value"));
            }
        }
        let expects = [
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
        for (off, e) in c.pointer_fields().into_iter().zip(expects) {
            self.field(cx, obj + off as u64, e, 0)?;
        }
        let rd = |off: usize| cx.i32(obj + off as u64);
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
            return Err(bad(obj, "code counts out of range"));
        }
        if firsttraceable < 0 || i64::from(firsttraceable) >= units as i64 {
            return Err(bad(obj, "_co_firsttraceable out of range"));
        }
        if let Some(fs) = c.framesize {
            if i64::from(rd(fs)?)
                != i64::from(nlocalsplus) + i64::from(stacksize) + i64::from(l.frame_specials)
            {
                return Err(bad(obj, "co_framesize inconsistent"));
            }
        }
        self.codes.push(PendingCode {
            obj,
            units,
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

/// Length of the tuple (or empty tuple) a code field refers to.
fn code_ref_len(cx: &Ctx<'_, '_>, l: &Layout, slot: u64) -> Result<i64, PyFormatError> {
    match cx.view.slot(slot) {
        Slot::Internal(t) => Ok(cx.i64(t + l.ob_size as u64)?),
        Slot::External(id) if cx.externs.kind(id) == Some(ExternKind::EmptyTuple) => Ok(0),
        _ => Err(bad(slot, "bad tuple reference")),
    }
}

fn check_bytes(cx: &Ctx<'_, '_>, l: &Layout, obj: u64) -> Result<u64, PyFormatError> {
    let n = cx.u64(obj + l.ob_size as u64)?;
    cx.plain(obj + l.ob_size as u64, n, "bad bytes size")?;
    if n > cx.len {
        return Err(bad(obj, "bad bytes size"));
    }
    cx.plain(obj + l.bytes_hash as u64, u64::MAX, "bytes hash not reset")?;
    let size = l.bytes_data as u64 + n + 1;
    let data = cx.bytes(obj + l.bytes_data as u64, n + 1)?;
    if data.last() != Some(&0) {
        return Err(bad(obj, "bytes not NUL-terminated"));
    }
    Ok(size)
}

fn check_str(cx: &mut Ctx<'_, '_>, l: &Layout, obj: u64) -> Result<u64, PyFormatError> {
    let s = &l.str_;
    let length = cx.u64(obj + s.length as u64)?;
    cx.plain(obj + s.length as u64, length, "bad str length")?;
    if length > cx.len {
        return Err(bad(obj, "bad str length"));
    }
    cx.plain(obj + s.hash as u64, u64::MAX, "str hash not reset")?;
    let st = cx.u32(obj + s.state as u64)?;
    if !matches!(cx.view.slot(obj + s.state as u64), Slot::None) {
        return Err(bad(obj, "slot in str state"));
    }
    let kind = (st >> state::KIND_SHIFT) & state::KIND_MASK;
    let ascii = st & state::ASCII != 0;
    if st & state::INTERNED_MASK != 0
        || st & state::COMPACT == 0
        || !matches!(kind, 1 | 2 | 4)
        || (ascii && kind != 1)
        || (st & state::BIT7 != 0) != s.bit7_set
        || st >> 8 != 0
    {
        return Err(bad(obj + s.state as u64, "bad str state"));
    }
    let k = u64::from(kind);
    let data_off = l.str_data(ascii) as u64;
    let size = data_off + (length + 1) * k;
    let data = cx.bytes(obj + data_off, (length + 1) * k)?;
    let (body, nul) = data.split_at((length * k) as usize);
    if nul.iter().any(|&b| b != 0) {
        return Err(bad(obj, "str not NUL-terminated"));
    }
    // After 4 bytes of state, the words up to the data: padding / utf8 / wstr fields.
    if !ascii {
        cx.plain(obj + s.utf8_length as u64, 0, "str utf8 cache not reset")?;
        cx.plain(obj + s.utf8 as u64, 0, "str utf8 cache not reset")?;
    }
    if let Some(w) = s.wstr {
        let wslot = obj + w as u64;
        if kind == 4 && !ascii {
            match cx.view.slot(wslot) {
                Slot::Internal(t) if t == obj + data_off => {}
                _ => return Err(bad(wslot, "3.11 wstr must point at the data")),
            }
            cx.slots_seen += 1;
            if let Some(wl) = s.wstr_length {
                cx.plain(obj + wl as u64, length, "3.11 wstr_length")?;
            }
        } else {
            cx.plain(wslot, 0, "3.11 wstr not NULL")?;
            if let (Some(wl), false) = (s.wstr_length, ascii) {
                cx.plain(obj + wl as u64, 0, "3.11 wstr_length not zero")?;
            }
        }
    }
    // The kind must be the narrowest that holds the widest character (CPython's
    // invariant: equal strings have equal kinds).
    let ok = match (kind, ascii) {
        (1, true) => body.is_ascii(),
        (1, false) => !body.is_ascii(),
        (2, _) => body.chunks_exact(2).any(|c| c[1] != 0),
        _ => {
            let mut wide = false;
            let mut valid = true;
            for c in body.chunks_exact(4) {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                wide |= v >= 0x10000;
                valid &= v <= 0x10FFFF;
            }
            wide && valid
        }
    };
    if !ok {
        return Err(bad(obj, "str kind does not match its widest character"));
    }
    Ok(size)
}

fn check_int(cx: &Ctx<'_, '_>, l: &Layout, obj: u64) -> Result<u64, PyFormatError> {
    let tag = cx.u64(obj + l.long_tag as u64)?;
    cx.plain(obj + l.long_tag as u64, tag, "bad int tag")?;
    let nd = if l.long_lv_tag {
        let sign = tag & 3;
        if tag & 4 != 0 || sign == 1 || sign == 3 {
            return Err(bad(obj, "bad int sign"));
        }
        tag >> 3
    } else {
        (tag as i64).unsigned_abs()
    };
    if nd == 0 || nd > cx.len / 4 {
        return Err(bad(obj, "bad int size"));
    }
    let size = l.long_digits as u64 + 4 * nd;
    let digits = cx.bytes(obj + l.long_digits as u64, 4 * nd)?;
    let mut top = 0;
    for d in digits.chunks_exact(4) {
        top = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        if top >> LONG_BITS_IN_DIGIT != 0 {
            return Err(bad(obj, "int digit out of range"));
        }
    }
    if top == 0 {
        return Err(bad(obj, "int not normalised"));
    }
    Ok(size)
}
