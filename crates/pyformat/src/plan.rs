//! The load plan of a span whose objects are trusted, without checking them.
//!
//! [`crate::Checker`] verifies every object of a span (and that the span metadata describes
//! them) and is run on every span before an archive is published and by `pycds verify`.
//! A process that loads an archive it trusts as it trusts its own `.pyc` files (the import
//! hook: see `spec/security.md`) only needs the fix-up plan, which [`Planner`] computes
//! from the span metadata and the slot bitmaps in time proportional to the number of
//! slots, not of object fields.
//!
//! What the planner still guarantees, on any input: every offset in the plan is inside the
//! span and 8-aligned; every slot it returns is a slot word of the span, so the loader's
//! writes stay on slot words of the span; every tuple of frozenset members and code object
//! starts with the archive's reference count and an `ob_type` external slot naming that
//! type, and the fixed part of its layout lies inside the span; every root is such an
//! object (a holder a 1-tuple); in a transient span, every listed object starts with the
//! transient reference count and an `ob_type` external slot naming a type.
//! What it does not verify is the rest of the objects' bytes.

use pycds_arena::SpanView;

use crate::check::{bad, group_frozen, Span, SpanPlan};
use crate::error::PyFormatError;
use crate::externs::{ExternKind, ExternTable, TypeTag};
use crate::layout::Layout;
use crate::meta::SpanMeta;

/// The planner (stateless apart from its layout).
#[derive(Debug)]
pub struct Planner {
    layout: &'static Layout,
}

impl Planner {
    /// A planner for `layout`.
    pub fn new(layout: &'static Layout) -> Planner {
        Planner { layout }
    }

    /// The fix-up plan of `view` from its metadata and slot bitmaps (see the module
    /// documentation for what is and is not verified); `roots` as for
    /// [`crate::Checker::check_span`].
    pub fn plan_span(
        &mut self,
        view: &SpanView<'_>,
        externs: &ExternTable,
        roots: &[(u64, bool)],
    ) -> Result<SpanPlan, PyFormatError> {
        let sp = Span::of(view);
        let l = self.layout;
        let start = sp.start;
        let meta = SpanMeta::parse(view.meta(), view.bytes())?;
        // Objects (and so every offset of the lists) lie before the lists.
        let end = meta.objects_end();
        // (Every object takes at least two words: a bound for a count that is only reported.)
        if u64::from(meta.objects()) > end / 16 {
            return Err(PyFormatError::BadSpanMeta {
                what: "object count larger than the span",
            });
        }
        let mut plan = SpanPlan {
            objects: meta.objects() as usize,
            transient: meta.transient(),
            ..SpanPlan::default()
        };
        let refcnt = if plan.transient {
            l.transient_refcnt
        } else {
            l.refcnt
        };
        // The type of the object starting at span-relative byte offset `rel`, judged by
        // its header (reference count and `ob_type` slot).
        let object_type = |rel: u64| -> Option<TypeTag> {
            if rel % 8 != 0 || rel >= sp.len || sp.word((rel / 8) as usize).ok() != Some(refcnt) {
                return None;
            }
            match externs.kind(sp.extern_at((rel / 8) as usize + l.ob_type / 8)?)? {
                ExternKind::Type(t) => Some(t),
                _ => None,
            }
        };
        // ... and the fixed part of its layout is inside the span.
        let is_object = |rel: u64, tag: TypeTag| {
            let fixed = match tag {
                TypeTag::Str => l.str_.ascii_size,
                TypeTag::Tuple => l.tuple_items,
                TypeTag::Code => l.code.adaptive,
                TypeTag::Bytes => l.bytes_data,
                TypeTag::Int => l.long_digits,
                TypeTag::Float => l.float_size,
                TypeTag::Complex => l.complex_size,
            };
            object_type(rel) == Some(tag) && rel + fixed as u64 <= end
        };
        let sorted = |list: &mut dyn Iterator<Item = u32>,
                      tag: TypeTag,
                      what: &'static str|
         -> Result<Vec<u64>, PyFormatError> {
            let mut out: Vec<u64> = Vec::new();
            for rel in list {
                let rel = u64::from(rel);
                if out.last().is_some_and(|&x| x >= rel) || !is_object(rel, tag) {
                    return Err(PyFormatError::BadSpanMeta { what });
                }
                out.push(rel);
            }
            Ok(out)
        };
        let codes = sorted(
            &mut meta.codes(),
            TypeTag::Code,
            "code list not sorted or not code objects",
        )?;
        plan.codes = codes.iter().map(|r| start + r).collect();
        // A transient span's object list: what the loader reads (reference counts) before
        // giving the span back.
        let mut last = None;
        for rel in meta.listed() {
            let rel = u64::from(rel);
            if last.is_some_and(|x| x >= rel) || rel >= end || object_type(rel).is_none() {
                return Err(PyFormatError::BadSpanMeta {
                    what: "object list not sorted or not objects",
                });
            }
            last = Some(rel);
        }

        // Frozenset slots: slot words holding the members tuple (or the empty tuple).
        let mut frozen = Vec::new();
        let mut last = None;
        for rel in meta.frozen() {
            let rel = u64::from(rel);
            if last.is_some_and(|x| x >= rel) || rel % 8 != 0 || rel >= end {
                return Err(PyFormatError::BadSpanMeta {
                    what: "frozenset list not sorted or out of span",
                });
            }
            last = Some(rel);
            let w = (rel / 8) as usize;
            let members = match (sp.internal_at(w), sp.extern_at(w)) {
                (Some(t), _) if t >= start && is_object(t - start, TypeTag::Tuple) => Some(t),
                (None, Some(id)) if externs.kind(id) == Some(ExternKind::EmptyTuple) => None,
                _ => {
                    return Err(PyFormatError::BadReference {
                        offset: start + rel,
                        expected: "a tuple of frozenset members",
                    })
                }
            };
            frozen.push((members, start + rel));
        }
        group_frozen(&mut plan, frozen);

        // Roots.
        for &(root, holder) in roots {
            let rel = root.wrapping_sub(start);
            let ok = if holder {
                is_object(rel, TypeTag::Tuple)
                    && sp.word((rel / 8) as usize + l.ob_size / 8).ok() == Some(1)
            } else {
                object_type(rel).is_some()
            };
            if root < start || !ok {
                return Err(bad(root, "root is not an object"));
            }
        }

        Ok(plan)
    }
}
