//! `pycds-pyformat` benchmarks on a real CPython archive (see `benches/README.md`).
//!
//! The archive is named by `PYCDS_BENCH_ARCHIVE` (write one with
//! `benches/startup/make_bench_archive.py`, e.g. the code objects of the W1 workload); without
//! it the benchmarks are skipped with a message.
//!
//! * `pyformat/verify`: the arena's per-span check of every span (CRC, bitmaps, slot targets);
//! * `pyformat/check`: the structural check of every span's objects (`Checker::check_span`),
//!   on spans verified beforehand; throughput in objects;
//! * `pyformat/plan`: the fix-up plan of every span for trusted objects
//!   (`Planner::plan_span`, what the import hook runs), on the same spans.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pycds_arena::{Archive, SpanId};
use pycds_pyformat::meta::{single_dependency, span_roots};
use pycds_pyformat::profile::archive_version;
use pycds_pyformat::{Checker, ExternTable, Planner};

fn bench(c: &mut Criterion) {
    let Ok(path) = std::env::var("PYCDS_BENCH_ARCHIVE") else {
        eprintln!("pyformat benches skipped: set PYCDS_BENCH_ARCHIVE to a pycds archive");
        return;
    };
    let bytes = std::fs::read(&path).expect("PYCDS_BENCH_ARCHIVE is readable");
    let a = Archive::from_bytes(&bytes).expect("a valid archive");
    let version = archive_version(&a).expect("a CPython archive");
    let externs = ExternTable::from_archive(&a).expect("extern table");
    let roots = span_roots(&a).expect("root metadata");
    let spans: Vec<SpanId> = (0..a.span_count()).map(SpanId).collect();
    let views: Vec<_> = spans
        .iter()
        .map(|&s| a.verify_span(s).expect("span verifies"))
        .collect();
    let mut checker = Checker::new(version.layout());
    let objects: usize = views
        .iter()
        .zip(&roots)
        .map(|(v, r)| {
            checker
                .check_span(v, &externs, r, single_dependency(&a, v.id()))
                .expect("span checks")
                .objects
        })
        .sum();
    eprintln!(
        "{path}: CPython {version}, {} spans, {objects} objects, {} heap bytes",
        spans.len(),
        a.heap_range().end - a.heap_range().start
    );

    let mut g = c.benchmark_group("pyformat");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(a.heap_range().end - a.heap_range().start));
    g.bench_function("verify", |b| {
        b.iter(|| {
            for &s in &spans {
                black_box(a.verify_span(s).expect("span verifies"));
            }
        })
    });
    g.throughput(Throughput::Elements(objects as u64));
    g.bench_function("check", |b| {
        b.iter(|| {
            for (v, r) in views.iter().zip(&roots) {
                black_box(
                    checker
                        .check_span(v, &externs, r, single_dependency(&a, v.id()))
                        .expect("span checks"),
                );
            }
        })
    });
    let mut planner = Planner::new(version.layout());
    g.bench_function("plan", |b| {
        b.iter(|| {
            for (v, r) in views.iter().zip(&roots) {
                black_box(planner.plan_span(v, &externs, r).expect("span plans"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
