//! Writes seed archives in the CPython profile (one per layout) into a directory, so the
//! fuzzers start from inputs whose extern names, span metadata and objects the checker
//! accepts: `gen-seeds DIR` writes `DIR/py311.arena`, `py312.arena`, `py313.arena`.

use std::path::Path;
use std::process::ExitCode;

use pycds_arena::{Archive, SpanId};
use pycds_pyformat::layout::CodeField;
use pycds_pyformat::meta::single_dependency;
use pycds_pyformat::{
    Checker, ExternKind, ExternTable, Fingerprint, ObjRef, PyArchiveWriter, PyFormatError,
    PyVersion, StrData,
};

fn fingerprint(v: PyVersion) -> Fingerprint {
    Fingerprint::synthetic(v, "fuzz seed")
}

/// Raw bytes of a plausible code object (`nlocals` plain locals, `units` code units).
fn raw_code(v: PyVersion, nlocals: i32, units: usize) -> Vec<u8> {
    let l = v.layout();
    let c = &l.code;
    let mut raw = vec![0u8; c.adaptive + 2 * units];
    raw[l.ob_size..l.ob_size + 8].copy_from_slice(&(units as u64).to_le_bytes());
    let mut put = |off: usize, val: i32| raw[off..off + 4].copy_from_slice(&val.to_le_bytes());
    put(c.argcount, nlocals.min(1));
    put(c.stacksize, 4);
    put(c.firstlineno, 1);
    put(c.nlocalsplus, nlocals);
    put(c.nlocals, nlocals);
    if let Some(fs) = c.framesize {
        put(fs, nlocals + 4 + l.frame_specials);
    }
    for (i, b) in raw[c.adaptive..].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    raw
}

/// One archive with every object kind of the profile: str (ASCII, latin-1, UCS-2, UCS-4,
/// interned), int, float, complex, bytes, tuples, a frozenset, a code object, singletons,
/// and holder roots.
fn archive(v: PyVersion) -> Result<Vec<u8>, PyFormatError> {
    let mut w = PyArchiveWriter::new(v.layout(), &fingerprint(v), b"fuzz-seed");
    w.begin_span();
    let s = |kind: u8, ascii: bool, data: &'static [u8], length: usize| StrData {
        kind,
        ascii,
        length,
        data,
    };
    let name = w.str_obj(s(1, true, b"spam", 4), true)?;
    let latin = w.str_obj(s(1, false, b"caf\xe9", 4), false)?;
    let ucs2 = w.str_obj(s(2, false, &[0x65, 0x65, 0xe5, 0x65], 2), false)?;
    let ucs4 = w.str_obj(
        s(4, false, &[0x00, 0xf6, 0x01, 0x00, 0x61, 0, 0, 0], 2),
        true,
    )?;
    let big = w.int_obj(true, &[1, 2, 3])?;
    let small = w.int_obj(false, &[7])?;
    let f = w.float_obj(1.5);
    let cx = w.complex_obj(0.5, -2.0);
    let by = w.bytes_obj(b"\x00\x01abc")?;
    let none = w.external(ExternKind::None);
    let t = w.external(ExternKind::True);
    let fs = w.frozenset_obj(&[name, latin])?;
    let consts = w.tuple_obj(&[none, t, big, small, f, cx, by, ucs2, ucs4, fs])?;
    let names = w.tuple_obj(&[name])?;
    let locals = w.tuple_obj(&[name, latin])?;
    let kinds = w.bytes_obj(&[0x20, 0x20])?;
    let empty_b = w.external(ExternKind::EmptyBytes);
    let file = w.str_obj(s(1, true, b"mod.py", 6), false)?;
    let lt = w.bytes_obj(b"\x80\x00\x01\x02")?;
    let mut fields = [ObjRef::Internal(0); 9];
    for (i, fld) in CodeField::ALL.iter().enumerate() {
        fields[i] = match fld {
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
    let code = w.code_obj(&raw_code(v, 2, 12), fields)?;
    w.add_root(b"mod", code, b"\0meta")?;
    w.end_span();
    w.begin_span();
    let fs2 = w.frozenset_obj(&[])?;
    w.add_root(b"empty-frozenset", fs2, b"")?;
    let seven = w.int_obj(false, &[7])?;
    w.add_root(b"small-int", seven, b"")?;
    let text = w.str_obj(s(1, true, b"hello world", 11), true)?;
    w.add_root(b"text", text, b"")?;
    w.end_span();
    w.finish()
}

/// The seed must pass the whole check, or the fuzzers would start from rejected inputs.
fn self_check(v: PyVersion, bytes: &[u8]) -> Result<usize, String> {
    let a = Archive::from_bytes(bytes).map_err(|e| e.to_string())?;
    let externs = ExternTable::from_archive(&a).map_err(|e| e.to_string())?;
    let roots = pycds_fuzz::span_roots(&a).ok_or("bad root meta")?;
    let mut checker = Checker::new(v.layout());
    let mut objects = 0;
    for i in 0..a.span_count() {
        let view = a.verify_span(SpanId(i)).map_err(|e| e.to_string())?;
        let plan = checker
            .check_span(
                &view,
                &externs,
                &roots[i as usize],
                single_dependency(&a, SpanId(i)),
            )
            .map_err(|e| e.to_string())?;
        pycds_fuzz::assert_plan_sound(&view, &plan, v.layout());
        objects += plan.objects;
    }
    Ok(objects)
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: gen-seeds DIR");
        return ExitCode::FAILURE;
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("gen-seeds: {dir}: {e}");
        return ExitCode::FAILURE;
    }
    for v in [PyVersion::V3_11, PyVersion::V3_12, PyVersion::V3_13] {
        let (a, b) = v.major_minor();
        let path = Path::new(&dir).join(format!("py{a}{b}.arena"));
        let written = archive(v).map_err(|e| e.to_string()).and_then(|bytes| {
            let objects = self_check(v, &bytes)?;
            std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
            Ok((bytes.len(), objects))
        });
        match written {
            Ok((n, objects)) => {
                println!("{} ({n} bytes, {objects} objects, checked)", path.display())
            }
            Err(e) => {
                eprintln!("gen-seeds: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
