//! Transient spans (a module's body and class-body code, written after its kept span and
//! referring into it): written, checked in id order and in load order, planned, and refused
//! when their references into the module's span are wrong or cannot be checked.

use pycds_arena::{Archive, SpanId};
use pycds_pyformat::layout::CodeField;
use pycds_pyformat::meta::{check_order, single_dependency, SpanMeta};
use pycds_pyformat::{
    Checker, ExternKind, ExternTable, Fingerprint, ObjRef, Planner, PyArchiveWriter, PyVersion,
    StrData,
};

fn fingerprint(v: PyVersion) -> Fingerprint {
    Fingerprint::synthetic(v, "test")
}

fn raw_code(v: PyVersion, units: usize) -> Vec<u8> {
    let l = v.layout();
    let c = &l.code;
    let mut raw = vec![0u8; c.adaptive + 2 * units];
    raw[l.ob_size..l.ob_size + 8].copy_from_slice(&(units as u64).to_le_bytes());
    raw[c.stacksize..c.stacksize + 4].copy_from_slice(&4i32.to_le_bytes());
    if let Some(fs) = c.framesize {
        raw[fs..fs + 4].copy_from_slice(&(4 + l.frame_specials).to_le_bytes());
    }
    for (i, b) in raw[c.adaptive..].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    raw
}

fn s(data: &'static [u8]) -> StrData<'static> {
    StrData {
        kind: 1,
        ascii: true,
        length: data.len(),
        data,
    }
}

/// A code object with `consts`, `file` as `co_filename` and otherwise private (or extern)
/// fields.
fn code(w: &mut PyArchiveWriter, v: PyVersion, consts: ObjRef, file: ObjRef) -> ObjRef {
    let empty_t = w.external(ExternKind::EmptyTuple);
    let empty_b = w.external(ExternKind::EmptyBytes);
    let name = w.str_obj(s(b"body"), true).unwrap();
    let lt = w.bytes_obj(b"\x80\x00\x01\x02").unwrap();
    let mut fields = [ObjRef::Internal(0); 9];
    for (i, f) in CodeField::ALL.iter().enumerate() {
        fields[i] = match f {
            CodeField::Consts => consts,
            CodeField::Names | CodeField::LocalsPlusNames => empty_t,
            CodeField::ExceptionTable | CodeField::LocalsPlusKinds => empty_b,
            CodeField::Filename => file,
            CodeField::Name | CodeField::Qualname => name,
            CodeField::Linetable => lt,
        };
    }
    w.code_obj(&raw_code(v, 8), fields).unwrap()
}

/// What [`split_archive`] gets wrong, if anything.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// one `co_consts` item points 8 bytes into a kept object
    Target,
    /// the body's `co_filename` is a kept tuple
    FileNotStr,
}

/// Span 0: the module's kept objects (a function's code, a docstring, a tuple); span 1:
/// the module's body, whose `co_consts` refers to them, to a class body of its own, and
/// to a frozenset whose members tuple is its own and whose members are kept objects. The
/// body and the class body share the function's `co_filename` (in span 0).
fn split_archive(v: PyVersion, fault: Fault) -> Vec<u8> {
    let mut w = PyArchiveWriter::new(v.layout(), &fingerprint(v), b"");
    w.begin_span();
    let none = w.external(ExternKind::None);
    let f_consts = w.tuple_obj(&[none]).unwrap();
    let file = w.str_obj(s(b"/src/mod.py"), false).unwrap();
    let func = code(&mut w, v, f_consts, file);
    let doc = w.str_obj(s(b"A module docstring."), false).unwrap();
    let kept_tuple = w.tuple_obj(&[doc, none]).unwrap();
    let member = w.str_obj(s(b"not interned"), false).unwrap();
    let module = w.end_span();
    w.begin_transient_span(module);
    let class_consts = w.tuple_obj(&[func, none]).unwrap();
    let class_body = code(&mut w, v, class_consts, file);
    let fs = w.frozenset_obj(&[member, doc]).unwrap();
    let kept = match (fault, kept_tuple) {
        (Fault::Target, ObjRef::Internal(o)) => ObjRef::Internal(o + 8),
        _ => kept_tuple,
    };
    let consts = w.tuple_obj(&[doc, func, class_body, kept, fs]).unwrap();
    let body_file = if fault == Fault::FileNotStr {
        kept_tuple
    } else {
        file
    };
    let body = code(&mut w, v, consts, body_file);
    w.add_root(b"mod", body, b"").unwrap();
    w.end_span();
    w.finish().unwrap()
}

/// Check `order` of the spans of `bytes` with one checker (then `finish`), and plan each.
fn check(bytes: &[u8], v: PyVersion, order: &[u32]) -> Result<Vec<(bool, usize)>, String> {
    let a = Archive::from_bytes(bytes).map_err(|e| e.to_string())?;
    let externs = ExternTable::from_archive(&a).map_err(|e| e.to_string())?;
    let mut checker = Checker::new(v.layout());
    let mut out = Vec::new();
    for &i in order {
        let id = SpanId(i);
        let view = a.verify_span(id).map_err(|e| e.to_string())?;
        let roots: Vec<(u64, bool)> = (0..a.root_count())
            .filter_map(|r| a.root(r))
            .filter(|r| r.span == id)
            .map(|r| (r.object, false))
            .collect();
        let plan = checker
            .check_span(&view, &externs, &roots, single_dependency(&a, id))
            .map_err(|e| e.to_string())?;
        let trusted = Planner::new(v.layout())
            .plan_span(&view, &externs, &roots)
            .map_err(|e| format!("planner: {e}"))?;
        assert_eq!(plan, trusted, "planner and checker disagree on span {i}");
        out.push((plan.transient, plan.objects));
    }
    checker.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn transient_spans_check_in_id_and_load_order() {
    for v in [PyVersion::V3_11, PyVersion::V3_12, PyVersion::V3_13] {
        let bytes = split_archive(v, Fault::None);
        let a = Archive::from_bytes(&bytes).unwrap();
        assert_eq!(single_dependency(&a, SpanId(1)), {
            let s = a.span(SpanId(0)).unwrap();
            Some((s.start, s.len))
        });
        assert_eq!(check_order(&a), vec![SpanId(1), SpanId(0)]);
        // id order (module span first) and load order (transient span, then its dependency).
        let id_order = check(&bytes, v, &[0, 1]).unwrap_or_else(|e| panic!("{v}: {e}"));
        let load_order = check(&bytes, v, &[1, 0]).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(id_order, vec![(false, 7), (true, 6)], "{v}");
        assert_eq!(load_order, vec![(true, 6), (false, 7)], "{v}");
        // The transient span lists every object, each with the transient count; the
        // module span's objects have the archive's.
        let l = v.layout();
        let t = a.verify_span(SpanId(1)).unwrap();
        let meta = SpanMeta::parse(t.meta(), t.bytes()).unwrap();
        assert!(meta.transient());
        let listed: Vec<u32> = meta.listed().collect();
        assert_eq!(listed.len(), 6);
        for r in &listed {
            assert_eq!(
                t.read_u64(t.start() + u64::from(*r)),
                Some(l.transient_refcnt)
            );
        }
        let m = a.verify_span(SpanId(0)).unwrap();
        assert!(!SpanMeta::parse(m.meta(), m.bytes()).unwrap().transient());
        let first = m.start() + if l.gc_head > 0 { l.gc_head as u64 } else { 0 };
        assert_eq!(m.read_u64(first), Some(l.refcnt));
    }
}

#[test]
fn references_into_the_module_span_are_checked() {
    let v = PyVersion::V3_12;
    // A reference into the middle of a kept object, or a code object's str field naming a
    // kept object of another type: refused in either order.
    let bad = split_archive(v, Fault::Target);
    for order in [[0, 1], [1, 0]] {
        let e = check(&bad, v, &order).unwrap_err();
        assert!(e.contains("module's span"), "{order:?}: {e}");
    }
    let bad = split_archive(v, Fault::FileNotStr);
    for order in [[0, 1], [1, 0]] {
        let e = check(&bad, v, &order).unwrap_err();
        assert!(e.contains("a str of the module's span"), "{order:?}: {e}");
    }
    // The transient span alone (its dependency checked neither just before nor after):
    // its references cannot be checked, and `finish` says so.
    let good = split_archive(v, Fault::None);
    let e = check(&good, v, &[1]).unwrap_err();
    assert!(e.contains("checked with this one"), "{e}");
    // ... nor with another span checked in between.
    let e = check(&good, v, &[0, 0, 1]).map(|_| ());
    assert!(e.is_ok(), "the dependency checked last before it is enough");
    let e = check(&good, v, &[1, 1, 0]).unwrap_err();
    assert!(e.contains("checked with this one"), "{e}");
}

#[test]
fn a_transient_span_needs_exactly_one_dependency() {
    let v = PyVersion::V3_13;
    let bytes = split_archive(v, Fault::None);
    let a = Archive::from_bytes(&bytes).unwrap();
    let externs = ExternTable::from_archive(&a).unwrap();
    let view = a.verify_span(SpanId(1)).unwrap();
    let e = Checker::new(v.layout())
        .check_span(&view, &externs, &[], None)
        .unwrap_err();
    assert!(e.to_string().contains("exactly one dependency"), "{e}");
}
