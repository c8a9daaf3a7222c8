//! Arena benchmarks (see `benches/README.md` for the command and the measured figures):
//!
//! * `open`: opening and validating an archive (header + tables, not span contents nor the slot
//!   bitmaps, whose bytes the span CRCs cover) as the heap grows from 1k to 1M small objects in
//!   100 spans: `Archive::from_bytes`, `LoadedArena::from_bytes` (copies the file),
//!   `LoadedArena::open` with both strategies;
//! * `load_span`: verifying + relocating one span of N slots (throughput in slots);
//! * `verify_span`: the per-span check (CRC + bitmaps + slot targets) in bytes/s, for a span
//!   without slots (CRC-bound) and one where a quarter of the words are slots.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use pycds_arena::{Archive, ArenaBuilder, ExternId, LoadStrategy, LoadedArena, SpanId, SpanView};

const SPANS: u64 = 100;
const EXTERNS: u32 = 16;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn builder() -> (ArenaBuilder, Vec<ExternId>) {
    let mut b = ArenaBuilder::new([7; 32]);
    b.set_producer("pycds-benches");
    let externs = (0..EXTERNS)
        .map(|i| b.extern_id(format!("extern-{i}").as_bytes()))
        .collect();
    (b, externs)
}

/// `objects` 16-byte objects in 100 spans: word 0 an internal slot to another object of the
/// span, word 1 an extern (every 4th object) or data. One root per span.
fn heap_archive(objects: u64) -> Vec<u8> {
    let (mut b, externs) = builder();
    let mut r = Rng(objects);
    let per_span = objects / SPANS;
    for s in 0..SPANS {
        let id = b.begin_span(&[]);
        let first = b.alloc(16, 8);
        let mut offs = vec![first];
        for _ in 1..per_span {
            offs.push(b.alloc(16, 8));
        }
        for (i, &o) in offs.iter().enumerate() {
            b.set_internal(o, offs[(r.next() % offs.len() as u64) as usize]);
            if i % 4 == 0 {
                b.set_external(o + 8, externs[i % externs.len()]);
            } else {
                b.bytes_mut(o + 8, 8)
                    .copy_from_slice(&r.next().to_le_bytes());
            }
        }
        let id = {
            let end = b.end_span(b"meta");
            assert_eq!(end, id);
            end
        };
        b.add_root(format!("root-{s:03}").as_bytes(), first, id, b"");
    }
    b.finish().expect("valid archive")
}

/// One span of `words` words; `slot_every`: one word in that many is a slot (0: none);
/// 7 of 8 slots are internal (random word of the span), 1 of 8 external.
fn span_archive(words: u64, slot_every: u64) -> Vec<u8> {
    let (mut b, externs) = builder();
    let mut r = Rng(words ^ slot_every);
    b.begin_span(&[]);
    let start = b.alloc((words * 8) as usize, 8);
    for w in 0..words {
        let o = start + 8 * w;
        if slot_every != 0 && w % slot_every == 0 {
            if (w / slot_every.max(1)) % 8 == 7 {
                b.set_external(o, externs[(w % u64::from(EXTERNS)) as usize]);
            } else {
                b.set_internal(o, start + 8 * (r.next() % words));
            }
        } else {
            b.bytes_mut(o, 8).copy_from_slice(&r.next().to_le_bytes());
        }
    }
    let id = b.end_span(b"");
    b.add_root(b"span", start, id, b"");
    b.finish().expect("valid archive")
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pycds-bench-{}-{name}.arena", std::process::id()));
    std::fs::write(&p, bytes).expect("write temp archive");
    p
}

fn bench_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    for objects in [1_000u64, 10_000, 100_000, 1_000_000] {
        let bytes = heap_archive(objects);
        let path = temp_file(&format!("open-{objects}"), &bytes);
        if objects >= 1_000_000 {
            // LoadedArena::from_bytes copies 16 MB: too slow for 20 linear samples in 2 s.
            g.sampling_mode(SamplingMode::Flat);
        }
        {
            let a = Archive::from_bytes(&bytes).expect("valid");
            assert_eq!(a.span_count() as u64, SPANS);
            assert!(a.verify_all().is_ok());
        }
        g.bench_with_input(
            BenchmarkId::new("Archive::from_bytes", objects),
            &bytes,
            |bn, bytes| {
                bn.iter(|| {
                    black_box(
                        Archive::from_bytes(black_box(bytes))
                            .expect("valid")
                            .span_count(),
                    )
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("LoadedArena::from_bytes", objects),
            &bytes,
            |bn, bytes| {
                bn.iter(|| {
                    black_box(
                        LoadedArena::from_bytes(black_box(bytes))
                            .expect("valid")
                            .len(),
                    )
                })
            },
        );
        for (name, strategy) in [
            ("LoadedArena::open(Read)", LoadStrategy::Read),
            ("LoadedArena::open(Map)", LoadStrategy::Map),
        ] {
            g.bench_with_input(BenchmarkId::new(name, objects), &path, |bn, path| {
                bn.iter(|| {
                    black_box(
                        LoadedArena::open(black_box(path), strategy)
                            .expect("valid")
                            .len(),
                    )
                })
            });
        }
        let _ = std::fs::remove_file(&path);
    }
    g.finish();
}

fn bench_load_span(c: &mut Criterion) {
    let mut g = c.benchmark_group("load_span");
    // Each iteration needs a fresh LoadedArena (a loaded span is never loaded again).
    g.sampling_mode(SamplingMode::Flat);
    for words in [1u64 << 10, 1 << 16, 1 << 20] {
        // every word a slot: 7/8 internal, 1/8 external
        let bytes = span_archive(words, 1);
        g.throughput(Throughput::Elements(words));
        g.bench_with_input(BenchmarkId::new("slots", words), &bytes, |bn, bytes| {
            bn.iter_batched(
                || LoadedArena::from_bytes(bytes).expect("valid"),
                |la| {
                    let mut check = |_: &SpanView<'_>| -> Result<(), ()> { Ok(()) };
                    let mut resolve = |id: ExternId, _: &[u8]| -> Result<u64, ()> {
                        Ok(0x1000 + 8 * u64::from(id.0))
                    };
                    la.load_span(SpanId(0), &mut check, &mut resolve)
                        .expect("loads");
                    la
                },
                if words > 1 << 12 {
                    BatchSize::PerIteration
                } else {
                    BatchSize::SmallInput
                },
            )
        });
    }
    g.finish();
}

fn bench_verify_span(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_span");
    for (label, slot_every) in [("no-slots", 0u64), ("quarter-slots", 4)] {
        for words in [1u64 << 13, 1 << 17, 1 << 21] {
            let bytes = span_archive(words, slot_every);
            let a = Archive::from_bytes(&bytes).expect("valid");
            g.throughput(Throughput::Bytes(words * 8));
            g.bench_with_input(BenchmarkId::new(label, words * 8), &a, |bn, a| {
                bn.iter(|| black_box(a.verify_span(SpanId(0)).expect("valid").len()))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = arena;
    // Short runs (the whole suite takes about a minute and a half): 20 samples, 2 s each.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_open, bench_load_span, bench_verify_span
}
criterion_main!(arena);
