//! For the input and for a copy with repaired checksums (`pycds_fuzz::variants`):
//! `Archive::from_bytes`, then `verify_span` on every span and
//! `verify_all`: must never panic; whatever is accepted must satisfy the format's invariants
//! (checked by `pycds_fuzz::assert_*_sound`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pycds_arena::{Archive, SpanId};

fuzz_target!(|data: &[u8]| {
    for input in pycds_fuzz::variants(data) {
        run(&input);
    }
});

fn run(data: &[u8]) {
    let Ok(a) = Archive::from_bytes(data) else {
        return;
    };
    pycds_fuzz::assert_tables_sound(&a, data.len());
    let _ = (
        a.profile(),
        a.producer(),
        a.archive_meta(),
        a.format_version(),
    );
    let mut all_ok = true;
    for i in 0..a.span_count() {
        match a.verify_span(SpanId(i)) {
            Ok(view) => pycds_fuzz::assert_span_sound(&a, &view),
            Err(_) => all_ok = false,
        }
    }
    assert!(a.verify_span(SpanId(a.span_count())).is_err());
    // verify_all = every span + the BITMAPS section CRC (ARENA-SEC-008), which the
    // per-span checks do not cover: it may fail alone, with exactly that error.
    match a.verify_all() {
        Ok(()) => assert!(all_ok, "verify_all accepted a span verify_span rejects"),
        Err(e) if all_ok => assert!(
            matches!(
                e.kind(),
                pycds_arena::ErrorKind::TableChecksum { section: 6, .. }
            ),
            "verify_all failed with every span valid: {e}"
        ),
        Err(_) => {}
    }
}
