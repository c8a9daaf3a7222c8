//! Writer -> arena -> checker round trips without an interpreter, and the checker's
//! behaviour on every single-bit corruption of a module's objects.

use pycds_arena::{Archive, ExternId, SpanId};
use pycds_pyformat::layout::CodeField;
use pycds_pyformat::meta::single_dependency;
use pycds_pyformat::{
    Checker, ExternKind, ExternTable, Fingerprint, ObjRef, Planner, PyArchiveWriter, PyVersion,
    StrData,
};

fn fingerprint(v: PyVersion) -> Fingerprint {
    Fingerprint::synthetic(v, "test")
}

/// A plausible code object's raw bytes for `layout`: counts consistent with `nlocals`
/// plain locals, `units` code units.
fn raw_code(v: PyVersion, nlocals: i32, units: usize) -> Vec<u8> {
    let l = v.layout();
    let c = &l.code;
    let mut raw = vec![0u8; c.adaptive + 2 * units];
    raw[l.ob_size..l.ob_size + 8].copy_from_slice(&(units as u64).to_le_bytes());
    let put = |raw: &mut Vec<u8>, off: usize, val: i32| {
        raw[off..off + 4].copy_from_slice(&val.to_le_bytes())
    };
    put(&mut raw, c.argcount, nlocals.min(1));
    put(&mut raw, c.stacksize, 4);
    put(&mut raw, c.firstlineno, 1);
    put(&mut raw, c.nlocalsplus, nlocals);
    put(&mut raw, c.nlocals, nlocals);
    if let Some(fs) = c.framesize {
        put(&mut raw, fs, nlocals + 4 + l.frame_specials);
    }
    for (i, b) in raw[c.adaptive..].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    raw
}

fn sample(v: PyVersion) -> Vec<u8> {
    let mut w = PyArchiveWriter::new(v.layout(), &fingerprint(v), b"client");
    w.begin_span();
    let s = |kind: u8, ascii: bool, data: &'static [u8], length: usize| StrData {
        kind,
        ascii,
        length,
        data,
    };
    let name = w.str_obj(s(1, true, b"spam", 4), true).unwrap();
    let latin = w.str_obj(s(1, false, b"caf\xe9", 4), false).unwrap();
    let ucs2 = w
        .str_obj(s(2, false, &[0x65, 0x65, 0xe5, 0x65], 2), false)
        .unwrap();
    let ucs4 = w
        .str_obj(
            s(4, false, &[0x00, 0xf6, 0x01, 0x00, 0x61, 0, 0, 0], 2),
            true,
        )
        .unwrap();
    let big = w.int_obj(true, &[1, 2, 3]).unwrap();
    let small = w.int_obj(false, &[7]).unwrap();
    assert_eq!(small, w.external(ExternKind::SmallInt(7)));
    let f = w.float_obj(1.5);
    let cx = w.complex_obj(0.5, -2.0);
    let by = w.bytes_obj(b"\x00\x01abc").unwrap();
    let none = w.external(ExternKind::None);
    let members = [name, latin];
    let fs = w.frozenset_obj(&members).unwrap();
    let consts = w
        .tuple_obj(&[none, big, small, f, cx, by, ucs2, ucs4, fs])
        .unwrap();
    let names = w.tuple_obj(&[name]).unwrap();
    let locals = w.tuple_obj(&[name, latin]).unwrap();
    let kinds = w.bytes_obj(&[0x20, 0x20]).unwrap();
    let empty_b = w.external(ExternKind::EmptyBytes);
    let file = w.str_obj(s(1, true, b"mod.py", 6), false).unwrap();
    let lt = w.bytes_obj(b"\x80\x00\x01\x02").unwrap();
    let mut fields = [ObjRef::Internal(0); 9];
    for (i, f) in CodeField::ALL.iter().enumerate() {
        fields[i] = match f {
            CodeField::Consts => consts,
            CodeField::Names => names,
            CodeField::ExceptionTable => empty_b,
            CodeField::LocalsPlusNames => locals,
            CodeField::LocalsPlusKinds => kinds,
            CodeField::Filename => file,
            CodeField::Name | CodeField::Qualname => name,
            CodeField::Linetable => lt,
        };
    }
    let code = w.code_obj(&raw_code(v, 2, 12), fields).unwrap();
    w.add_root(b"mod", code, b"meta").unwrap();
    w.end_span();
    w.begin_span();
    let fs2 = w.frozenset_obj(&[]).unwrap();
    w.add_root(b"empty-frozenset", fs2, b"").unwrap();
    w.end_span();
    w.finish().unwrap()
}

fn check_all(bytes: &[u8], v: PyVersion) -> Result<usize, String> {
    let a = Archive::from_bytes(bytes).map_err(|e| e.to_string())?;
    let externs = ExternTable::from_archive(&a).map_err(|e| e.to_string())?;
    let mut checker = Checker::new(v.layout());
    let mut n = 0;
    for i in 0..a.span_count() {
        let view = a.verify_span(SpanId(i)).map_err(|e| e.to_string())?;
        let roots: Vec<(u64, bool)> = (0..a.root_count())
            .filter_map(|r| a.root(r))
            .filter(|r| r.span == SpanId(i))
            .map(|r| (r.object, r.meta.first() == Some(&1)))
            .collect();
        let plan = checker
            .check_span(&view, &externs, &roots, single_dependency(&a, SpanId(i)))
            .map_err(|e| e.to_string())?;
        // The planner (used when objects are trusted) computes the same plan.
        let trusted = Planner::new(v.layout())
            .plan_span(&view, &externs, &roots)
            .map_err(|e| format!("planner: {e}"))?;
        assert_eq!(plan, trusted, "planner and checker disagree on span {i}");
        n += plan.objects;
    }
    Ok(n)
}

#[test]
fn writer_output_passes_the_checker_on_every_version() {
    for v in [PyVersion::V3_11, PyVersion::V3_12, PyVersion::V3_13] {
        let bytes = sample(v);
        let n = check_all(&bytes, v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(n >= 15, "{v}: {n} objects");
        // Deterministic output.
        assert_eq!(bytes, sample(v));
    }
}

#[test]
fn interned_strings_are_one_extern_per_archive_and_the_plan_lists_frozensets() {
    let v = PyVersion::V3_12;
    let bytes = sample(v);
    let a = Archive::from_bytes(&bytes).unwrap();
    let externs = ExternTable::from_archive(&a).unwrap();
    // "spam" and the UCS-4 string were interned: each is an extern carrying its characters.
    let istr: Vec<&[u8]> = (0..a.extern_count())
        .filter(|&i| externs.kind(ExternId(i)) == Some(ExternKind::InternedStr))
        .map(|i| a.extern_name(ExternId(i)).unwrap())
        .collect();
    assert_eq!(
        istr,
        vec![&b"istr1:spam"[..], b"istr4:\x00\xf6\x01\x00a\x00\x00\x00"]
    );
    let root = a.find_root(b"mod").unwrap();
    let view = a.verify_span(root.span).unwrap();
    // No str object of the span holds "spam": co_names, co_localsplusnames, co_name,
    // co_qualname and the frozenset members tuple all refer to the extern.
    assert!(!view.bytes().windows(4).any(|w| w == b"spam"));
    let plan = Checker::new(v.layout())
        .check_span(&view, &externs, &[(root.object, false)], None)
        .unwrap();
    assert_eq!(plan.frozen.len(), 1);
    assert_eq!(plan.codes.len(), 1);
    // A second span interning "spam" again reuses the extern.
    let mut w = PyArchiveWriter::new(v.layout(), &fingerprint(v), b"client");
    w.begin_span();
    let s = StrData {
        kind: 1,
        ascii: true,
        length: 4,
        data: b"spam",
    };
    let first = w.str_obj(s, true).unwrap();
    w.add_root(b"a", first, b"").unwrap();
    w.end_span();
    w.begin_span();
    let again = w.str_obj(s, true).unwrap();
    w.add_root(b"b", again, b"").unwrap();
    w.end_span();
    assert!(matches!(first, ObjRef::External(_)));
    assert_eq!(first, again);
    // Not interned: an object of the span.
    w.begin_span();
    assert!(matches!(w.str_obj(s, false).unwrap(), ObjRef::Internal(_)));
    w.end_span();
}

#[test]
fn a_layout_mismatch_is_refused() {
    // An archive written for 3.11 checked with the 3.12 layout must not pass.
    let bytes = sample(PyVersion::V3_11);
    assert!(check_all(&bytes, PyVersion::V3_12).is_err());
}

#[test]
fn every_bit_flip_in_a_span_is_refused_without_panicking() {
    let v = PyVersion::V3_13;
    let bytes = sample(v);
    let a = Archive::from_bytes(&bytes).unwrap();
    let span = a.span(SpanId(0)).unwrap();
    let (start, len) = (span.start as usize, span.len as usize);
    for byte in start..start + len {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[byte] ^= 1 << bit;
            assert!(check_all(&b, v).is_err(), "flip at {byte}.{bit} accepted");
        }
    }
}

#[test]
fn a_malformed_interned_string_name_is_classified_at_open_and_refused_when_checked() {
    // Open classifies `istr` names by prefix only (they are most of a large archive's
    // externs); their characters are checked when resolved, and by the full check.
    let mut b = pycds_arena::ArenaBuilder::new([0; 32]);
    b.begin_span(&[]);
    let at = b.alloc(8, 8);
    let good = b.extern_id(b"istr1:ab");
    let bad = b.extern_id(b"istr1:a"); // one latin-1 character: canonically `ichar:61`
    b.set_external(at, bad);
    b.end_span(&[]);
    let bytes = b.finish().unwrap();
    let a = Archive::from_bytes(&bytes).unwrap();
    let t = ExternTable::from_archive(&a).unwrap();
    assert_eq!(t.kind(good), Some(ExternKind::InternedStr));
    assert_eq!(t.kind(bad), Some(ExternKind::InternedStr));
    assert_eq!(
        pycds_pyformat::externs::parse_interned_str(a.extern_name(bad).unwrap()),
        None
    );
    assert!(t.check_interned_names(&a).is_err());
    // Any other unknown name still makes the whole archive unusable at open.
    let mut b = pycds_arena::ArenaBuilder::new([0; 32]);
    b.begin_span(&[]);
    let at = b.alloc(8, 8);
    let id = b.extern_id(b"list:");
    b.set_external(at, id);
    b.end_span(&[]);
    let bytes = b.finish().unwrap();
    assert!(ExternTable::from_archive(&Archive::from_bytes(&bytes).unwrap()).is_err());
}
