//! For the input and for a copy with repaired checksums (`pycds_fuzz::variants`):
//! `LoadedArena::from_bytes`, then `load_span` on every span, with a
//! resolver that returns a fixed non-zero address and a check callback that runs the
//! CPython checker when the extern table decodes. Oracles: `LoadedArena` accepts exactly what
//! `Archive` accepts; a span loads iff it verifies, its check passes and its dependencies
//! loaded; a loaded span's memory holds `base + target` in every internal slot, the resolved
//! address in every external slot and the file's bytes everywhere else; each extern is
//! resolved at most once; a failed span stays failed.
#![no_main]

use std::cell::RefCell;
use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use pycds_arena::{Archive, ExternId, LoadedArena, SpanId, SpanView};
use pycds_pyformat::meta::single_dependency;
use pycds_pyformat::{Checker, ExternTable, PyVersion};

const RESOLVED: u64 = 0x7f00_dead_b000;

fuzz_target!(|data: &[u8]| {
    for input in pycds_fuzz::variants(data) {
        run(&input);
    }
});

fn run(data: &[u8]) {
    let loaded = LoadedArena::from_bytes(data);
    let plain = Archive::from_bytes(data);
    assert_eq!(
        loaded.is_ok(),
        plain.is_ok(),
        "LoadedArena and Archive disagree on the tables"
    );
    let (Ok(la), Ok(plain)) = (loaded, plain) else {
        return;
    };
    let a = la.archive();
    assert_eq!(a.span_count(), plain.span_count());
    let externs = ExternTable::from_archive(a).ok();
    let version = pycds_fuzz::archive_version(a).unwrap_or(match data.len() % 3 {
        0 => PyVersion::V3_11,
        1 => PyVersion::V3_12,
        _ => PyVersion::V3_13,
    });
    let roots =
        pycds_fuzz::span_roots(a).unwrap_or_else(|| vec![Vec::new(); a.span_count() as usize]);
    let checker = RefCell::new(Checker::new(version.layout()));
    let resolved: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
    let mut ok = vec![false; a.span_count() as usize];
    let base = la.base() as u64;
    for i in 0..a.span_count() {
        let id = SpanId(i);
        let check_result: RefCell<Option<bool>> = RefCell::new(None);
        let mut check = |view: &SpanView<'_>| -> Result<(), String> {
            assert_eq!(
                view.id(),
                id,
                "check called for another span (deps are loaded already)"
            );
            let r = match &externs {
                Some(x) => checker
                    .borrow_mut()
                    .check_span(
                        view,
                        x,
                        &roots[view.id().0 as usize],
                        single_dependency(&a, view.id()),
                    )
                    .map(|plan| pycds_fuzz::assert_plan_sound(view, &plan, version.layout()))
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            };
            *check_result.borrow_mut() = Some(r.is_ok());
            r
        };
        let mut resolve = |x: ExternId, name: &[u8]| -> Result<u64, String> {
            assert!(
                resolved.borrow_mut().insert(x.0),
                "extern {} resolved twice",
                x.0
            );
            assert_eq!(a.extern_name(x), Some(name));
            Ok(RESOLVED)
        };
        let r = la.load_span(id, &mut check, &mut resolve);
        let verified = plain.verify_span(id);
        let deps_ok = plain
            .span(id)
            .expect("span exists")
            .deps
            .iter()
            .all(|d| ok[d.0 as usize]);
        let expected = verified.is_ok() && *check_result.borrow() == Some(true) && deps_ok;
        assert_eq!(
            r.is_ok(),
            expected,
            "load_span({i}) = {r:?}, expected ok = {expected}"
        );
        assert_eq!(la.is_loaded(id), r.is_ok());
        ok[i as usize] = r.is_ok();
        // Idempotent: Ok stays Ok without calling back; a failure is final.
        let mut no_check =
            |_: &SpanView<'_>| -> Result<(), String> { panic!("check called again") };
        let mut no_resolve =
            |_: ExternId, _: &[u8]| -> Result<u64, String> { panic!("resolve called again") };
        let again = la.load_span(id, &mut no_check, &mut no_resolve);
        assert_eq!(again.is_ok(), r.is_ok());
        if let (Ok(()), Ok(view)) = (&r, &verified) {
            let mut w = view.start();
            while w < view.start() + view.len() {
                // SAFETY: `w` is a word of a loaded span; the loaded arena holds the whole
                // file at `base` and stays alive (and unmoved) for this whole block.
                let got =
                    unsafe { core::ptr::read_unaligned(la.base().add(w as usize).cast::<u64>()) };
                let orig = u64::from_le_bytes(data[w as usize..w as usize + 8].try_into().unwrap());
                let want = match view.slot(w) {
                    pycds_arena::Slot::Internal(t) => base + t,
                    pycds_arena::Slot::External(_) => RESOLVED,
                    pycds_arena::Slot::None => u64::from_ne_bytes(orig.to_le_bytes()),
                };
                assert_eq!(got, want, "word {w:#x} of span {i} after relocation");
                w += 8;
            }
        }
    }
    assert!(la
        .load_span::<String>(SpanId(a.span_count()), &mut |_| Ok(()), &mut |_, _| Ok(1))
        .is_err());
}
