//! Writes sample archives with the reference writer, for `spec/reader/test.sh` (the
//! independent spec reader must accept them and list the same roots), and reports what the
//! reference reader thinks of arbitrary files (`--verify`, for differential tests: the full
//! check, `Archive::from_bytes` then `Archive::verify_all`, which ends with the BITMAPS section
//! CRC, `ARENA-SEC-008`, that opening alone does not check).
//!
//! ```text
//! write-sample-archives DIR              random arena graphs: DIR/random-N.arena + .roots
//! write-sample-archives --verify FILE... for each file: "OK <roots>" or "ERR <error>" (exit 0)
//! ```
//!
//! A `.roots` file lists the root names as the Rust reader reports them (read back with
//! `Archive::from_bytes`), one a line, printable ASCII as is and every other byte (and `"`,
//! `\`) as `\xNN` -- the same escaping as `arena_reader.py --roots`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use pycds_arena::{Archive, ArenaBuilder, SpanId};

/// SplitMix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// `0..max` random bytes.
    fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }
}

fn escape(name: &[u8]) -> String {
    let mut s = String::new();
    for &c in name {
        if (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\' {
            s.push(c as char);
        } else {
            let _ = write!(s, "\\x{c:02x}");
        }
    }
    s
}

/// A random object graph: `spans` spans of `objects` objects each (on average).
fn random_archive(seed: u64, spans: u32, objects: u32) -> Vec<u8> {
    let mut r = Rng(seed);
    let mut profile = [0u8; 32];
    profile.copy_from_slice(&r.bytes(32));
    let mut b = ArenaBuilder::new(profile);
    b.set_producer(&format!("write-sample-archives seed {seed}"));
    b.set_archive_meta(&r.some_bytes(40));
    if r.below(2) == 0 {
        b.set_preferred_base(0x7f00_0000_0000 + (r.below(1 << 20) << 12));
    }
    let n_externs = 1 + r.below(20);
    let externs: Vec<_> = (0..n_externs)
        .map(|i| {
            let mut name = format!("extern-{i}-").into_bytes();
            name.extend(r.some_bytes(4));
            b.extern_id(&name)
        })
        .collect();
    // (id, start, len) of finished spans
    let mut done: Vec<(SpanId, u64, u64)> = Vec::new();
    let mut roots: Vec<(Vec<u8>, u64, SpanId, Vec<u8>)> = Vec::new();
    for s in 0..spans {
        let mut deps: Vec<SpanId> = Vec::new();
        for d in &done {
            if r.below(3) == 0 {
                deps.push(d.0);
            }
        }
        let id = b.begin_span(&deps);
        // Objects: header word + 0..15 payload words, random alignment.
        let mut objs: Vec<(u64, u64)> = Vec::new();
        let n_obj = if objects == 0 {
            0
        } else {
            1 + r.below(u64::from(objects) * 2)
        };
        for _ in 0..n_obj {
            let words = 1 + r.below(16);
            let align = 8 << r.below(4);
            let off = b.alloc((words * 8) as usize, align as usize);
            let data = r.bytes((words * 8) as usize);
            b.bytes_mut(off, data.len()).copy_from_slice(&data);
            objs.push((off, words));
        }
        // Allowed targets: own objects, and any byte of a dependency span.
        for &(off, words) in &objs {
            for w in 0..words {
                let slot = off + 8 * w;
                match r.below(4) {
                    0 => {
                        let target = if !deps.is_empty() && r.below(2) == 0 {
                            let dep = deps[r.below(deps.len() as u64) as usize];
                            let d = done.iter().find(|x| x.0 == dep).copied();
                            match d {
                                Some((_, start, len)) if len > 0 => start + r.below(len),
                                _ => off,
                            }
                        } else {
                            let (o, ws) = objs[r.below(objs.len() as u64) as usize];
                            o + r.below(ws * 8)
                        };
                        b.set_internal(slot, target);
                    }
                    1 => b.set_external(slot, externs[r.below(externs.len() as u64) as usize]),
                    _ => {}
                }
            }
        }
        let meta = r.some_bytes(24);
        let id2 = b.end_span(&meta);
        assert_eq!(id, id2);
        let (start, len) = match (objs.first(), objs.last()) {
            (Some(f), Some(l)) => (f.0, l.0 + 8 * l.1 - f.0),
            _ => (0, 0),
        };
        done.push((id, start, len));
        // Roots: some objects get a name (mostly ASCII, sometimes arbitrary bytes).
        for &(off, _) in &objs {
            if r.below(4) != 0 {
                continue;
            }
            let mut name = format!("span{s}.obj{off:x}").into_bytes();
            if r.below(5) == 0 {
                name.extend(r.some_bytes(3));
                name.push(0x80 | r.below(128) as u8);
            }
            if roots.iter().all(|x| x.0 != name) {
                let m = r.some_bytes(12);
                roots.push((name, off, id, m));
            }
        }
    }
    for (name, obj, span, meta) in &roots {
        b.add_root(name, *obj, *span, meta);
    }
    b.finish()
        .expect("the builder accepts its own random graph")
}

fn roots_text(bytes: &[u8]) -> Result<String, String> {
    let a = Archive::from_bytes(bytes).map_err(|e| e.to_string())?;
    a.verify_all().map_err(|e| e.to_string())?;
    let mut out = String::new();
    for i in 0..a.root_count() {
        let root = a.root(i).ok_or("root index out of range")?;
        out.push_str(&escape(root.name));
        out.push('\n');
    }
    Ok(out)
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [flag, files @ ..] if flag == "--verify" => {
            for f in files {
                let bytes = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
                match roots_text(&bytes) {
                    Ok(roots) => println!("OK {f} {}", roots.lines().count()),
                    Err(e) => println!("ERR {f} {e}"),
                }
            }
            Ok(())
        }
        [dir] if !dir.starts_with('-') => {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            // (seed, spans, objects per span): empty, tiny, wide, deep, large.
            let plans: [(u64, u32, u32); 8] = [
                (1, 0, 0),
                (2, 1, 1),
                (3, 3, 0),
                (4, 4, 8),
                (5, 12, 20),
                (6, 40, 3),
                (7, 2, 2000),
                (8, 100, 50),
            ];
            for (i, &(seed, spans, objects)) in plans.iter().enumerate() {
                let bytes = random_archive(seed, spans, objects);
                let path = Path::new(dir).join(format!("random-{i}.arena"));
                std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
                let roots = roots_text(&bytes)?;
                std::fs::write(path.with_extension("roots"), &roots).map_err(|e| e.to_string())?;
                println!(
                    "{} {} bytes, {spans} spans, {} roots",
                    path.display(),
                    bytes.len(),
                    roots.lines().count()
                );
            }
            Ok(())
        }
        _ => Err("usage: write-sample-archives DIR | --verify FILE...".to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write-sample-archives: {e}");
            ExitCode::FAILURE
        }
    }
}
