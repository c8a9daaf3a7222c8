//! A human-readable, annotated hex dump of an archive (used for the golden `.dump` files in
//! `spec/testdata/` and the hex dump appendix of `spec/format.md`).
#![deny(clippy::indexing_slicing)]

use core::fmt::Write as _;

use zerocopy::IntoBytes;

use crate::error::ArenaError;
use crate::layout::{self, SECTION_ENTRY_LEN};
use crate::read::{Archive, Slot};
use crate::write::{ExternId, SpanId};

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn quoted(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn line(out: &mut String, off: u64, bytes: &[u8], note: &str) {
    let text = format!("{off:06x}  {:<48} {note}", hex(bytes));
    out.push_str(text.trim_end());
    out.push('\n');
}

fn pool(out: &mut String, start: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        let _ = writeln!(out, "{start:06x}  (empty)");
    }
    for (i, chunk) in bytes.chunks(16).enumerate() {
        line(
            out,
            start + 16 * i as u64,
            chunk,
            &format!("|{}|", quoted(chunk)),
        );
    }
}

/// Prints a fixed-size entry field by field: `fields` are `(name, size)`; the first line also
/// carries `title`.
fn field_lines(out: &mut String, off: u64, entry: &[u8], fields: &[(&str, usize)], title: &str) {
    let mut at = 0usize;
    for (i, (name, size)) in fields.iter().enumerate() {
        let b = entry.get(at..at + size).unwrap_or(&[]);
        let mut v = [0u8; 8];
        if let Some(dst) = v.get_mut(..b.len()) {
            dst.copy_from_slice(b);
        }
        let raw = u64::from_le_bytes(v);
        let value = if name.contains("crc") {
            format!("{raw:#010x}")
        } else {
            raw.to_string()
        };
        let note = if i == 0 {
            format!("{title}: {name} = {value}")
        } else {
            format!("  {name} = {value}")
        };
        line(out, off + at as u64, b, &note);
        at += size;
    }
}

const SECTION_FIELDS: &[(&str, usize)] = &[("kind", 4), ("crc", 4), ("offset", 8), ("len", 8)];
const EXTERN_FIELDS: &[(&str, usize)] = &[("name_off", 4), ("name_len", 4)];
const SPAN_FIELDS: &[(&str, usize)] = &[
    ("start", 8),
    ("len", 8),
    ("bitmap_off", 8),
    ("bitmap_len", 8),
    ("deps_off", 4),
    ("deps_count", 4),
    ("meta_off", 4),
    ("meta_len", 4),
    ("crc", 4),
    ("reserved", 4),
];
const ROOT_FIELDS: &[(&str, usize)] = &[
    ("name_off", 4),
    ("name_len", 4),
    ("object", 8),
    ("span", 4),
    ("meta_off", 4),
    ("meta_len", 4),
    ("reserved", 4),
];

fn section_name(kind: u32) -> &'static str {
    match kind {
        layout::SECTION_STRINGS => "STRINGS",
        layout::SECTION_EXTERNS => "EXTERNS",
        layout::SECTION_SPANS => "SPANS",
        layout::SECTION_DEPS => "DEPS",
        layout::SECTION_ROOTS => "ROOTS",
        layout::SECTION_BITMAPS => "BITMAPS",
        layout::SECTION_META => "META",
        layout::SECTION_PRODUCER => "PRODUCER",
        layout::SECTION_ARCHIVE_META => "ARCHIVE_META",
        _ => "UNKNOWN",
    }
}

/// Validates `bytes` completely (tables and every span) and renders an annotated dump: every
/// header field, every heap word with its slot kind, the section table, and every section.
pub fn dump(bytes: &[u8]) -> Result<String, ArenaError> {
    let a = Archive::from_bytes(bytes)?;
    a.verify_all()?;
    let h = a.header();
    let hb = h.as_bytes();
    let mut out = String::new();
    let get = |from: usize, to: usize| bytes.get(from..to).unwrap_or(&[]);
    let _ = writeln!(out, "# pycds arena, {} bytes", bytes.len());
    let _ = writeln!(out, "# header [0x000000, 0x000080)");
    let header_fields: [(usize, usize, String); 18] = [
        (0, 8, format!("magic \"{}\"", quoted(&h.magic))),
        (8, 10, format!("format_major = {}", h.format_major.get())),
        (10, 12, format!("format_minor = {}", h.format_minor.get())),
        (12, 16, format!("header_len = {}", h.header_len.get())),
        (16, 24, format!("file_len = {}", h.file_len.get())),
        (
            24,
            28,
            format!("incompat_flags = {:#x}", h.incompat_flags.get()),
        ),
        (
            28,
            32,
            format!("compat_flags = {:#x}", h.compat_flags.get()),
        ),
        (
            32,
            48,
            format!("profile[0..16] \"{}\"", quoted(&h.profile[..16])),
        ),
        (
            48,
            64,
            format!("profile[16..32] \"{}\"", quoted(&h.profile[16..])),
        ),
        (
            64,
            72,
            format!("preferred_base = {:#x}", h.preferred_base.get()),
        ),
        (72, 80, format!("heap_start = {:#x}", h.heap_start.get())),
        (80, 88, format!("heap_len = {:#x}", h.heap_len.get())),
        (
            88,
            96,
            format!("tables_start = {:#x}", h.tables_start.get()),
        ),
        (96, 104, format!("tables_len = {:#x}", h.tables_len.get())),
        (
            104,
            112,
            format!("section_table_offset = {:#x}", h.section_table_offset.get()),
        ),
        (
            112,
            116,
            format!("section_count = {}", h.section_count.get()),
        ),
        (
            116,
            120,
            format!("section_table_crc = {:#010x}", h.section_table_crc.get()),
        ),
        (
            120,
            124,
            format!("header_crc = {:#010x}", h.header_crc.get()),
        ),
    ];
    for (from, to, note) in &header_fields {
        line(
            &mut out,
            *from as u64,
            hb.get(*from..*to).unwrap_or(&[]),
            note,
        );
    }
    line(
        &mut out,
        124,
        hb.get(124..128).unwrap_or(&[]),
        "reserved (zero)",
    );

    let heap = a.heap_range();
    let _ = writeln!(out, "# heap [{:#08x}, {:#08x})", heap.start, heap.end);
    for i in 0..a.span_count() {
        let v = a.verify_span(SpanId(i))?;
        let info = a
            .span(SpanId(i))
            .ok_or(crate::ErrorKind::NoSuchSpan { span: i })?;
        let deps: Vec<String> = info.deps.iter().map(|d| d.0.to_string()).collect();
        let _ = writeln!(
            out,
            "## span {i} [{:#08x}, {:#08x}) deps [{}] meta \"{}\" crc {:#010x}",
            info.start,
            info.start + info.len,
            deps.join(", "),
            quoted(info.meta),
            info.crc
        );
        for w in 0..info.len / 8 {
            let off = info.start + 8 * w;
            let rel = usize::try_from(8 * w).unwrap_or(usize::MAX);
            let word = v.bytes().get(rel..rel.saturating_add(8)).unwrap_or(&[]);
            let note = match v.slot(off) {
                Slot::None => format!("data |{}|", quoted(word)),
                Slot::Internal(t) => format!("internal -> {t:#x}"),
                Slot::External(id) => format!(
                    "external -> extern {} \"{}\"",
                    id.0,
                    quoted(a.extern_name(id).unwrap_or(&[]))
                ),
            };
            line(&mut out, off, word, &note);
        }
    }

    let ts = h.tables_start.get();
    let _ = writeln!(out, "# tables [{ts:#08x}, {:#08x})", a.file_len());
    let _ = writeln!(out, "## section table");
    let mut sections = Vec::new();
    for i in 0..u64::from(h.section_count.get()) {
        let off = ts + SECTION_ENTRY_LEN * i;
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let e = get(start, start.saturating_add(24));
        let kind = u32::from_le_bytes(
            e.get(0..4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        );
        let so = u64::from_le_bytes(
            e.get(8..16)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 8]),
        );
        let sl = u64::from_le_bytes(
            e.get(16..24)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 8]),
        );
        field_lines(
            &mut out,
            off,
            e,
            SECTION_FIELDS,
            &format!("section {i} ({})", section_name(kind)),
        );
        sections.push((kind, so, sl));
    }
    let mut prev_end = ts + SECTION_ENTRY_LEN * u64::from(h.section_count.get());
    let padding = |out: &mut String, from: u64, to: u64| {
        if to > from {
            let f = usize::try_from(from).unwrap_or(usize::MAX);
            let t = usize::try_from(to).unwrap_or(usize::MAX);
            line(out, from, get(f, t), "padding (zero)");
        }
    };
    for (kind, so, sl) in sections {
        padding(&mut out, prev_end, so);
        prev_end = so + sl;
        let _ = writeln!(
            out,
            "## {} [{so:#08x}, {:#08x})",
            section_name(kind),
            so + sl
        );
        let s = usize::try_from(so).unwrap_or(usize::MAX);
        let body = get(s, s.saturating_add(usize::try_from(sl).unwrap_or(0)));
        let entry = |size: usize, f: &dyn Fn(usize) -> String, out: &mut String| {
            for (i, chunk) in body.chunks(size).enumerate() {
                line(out, so + (size * i) as u64, chunk, &f(i));
            }
        };
        let entries = |spec: &[(&str, usize)], f: &dyn Fn(usize) -> String, out: &mut String| {
            let size: usize = spec.iter().map(|f| f.1).sum();
            for (i, chunk) in body.chunks(size).enumerate() {
                field_lines(out, so + (size * i) as u64, chunk, spec, &f(i));
            }
        };
        match kind {
            layout::SECTION_EXTERNS => entries(
                EXTERN_FIELDS,
                &|i| {
                    let id = ExternId(u32::try_from(i).unwrap_or(u32::MAX));
                    format!(
                        "extern {i}: \"{}\"",
                        quoted(a.extern_name(id).unwrap_or(&[]))
                    )
                },
                &mut out,
            ),
            layout::SECTION_SPANS => entries(
                SPAN_FIELDS,
                &|i| {
                    let id = SpanId(u32::try_from(i).unwrap_or(u32::MAX));
                    a.span(id)
                        .map_or(String::new(), |s| format!("span {}", s.id.0))
                },
                &mut out,
            ),
            layout::SECTION_DEPS => entry(4, &|i| format!("deps[{i}]"), &mut out),
            layout::SECTION_BITMAPS => entry(
                8,
                &|i| {
                    let at = 8 * i as u64;
                    (0..a.span_count())
                        .find_map(|sid| {
                            let e = a.span_entry(SpanId(sid))?;
                            let (o, l) = (e.bitmap_off.get(), e.bitmap_len.get());
                            if at >= o && at < o + l {
                                Some(format!("span {sid} internal bitmap word {}", (at - o) / 8))
                            } else if at >= o + l && at < o + 2 * l {
                                Some(format!(
                                    "span {sid} external bitmap word {}",
                                    (at - o - l) / 8
                                ))
                            } else {
                                None
                            }
                        })
                        .unwrap_or_else(|| "bitmap word".to_string())
                },
                &mut out,
            ),
            layout::SECTION_ROOTS => entries(
                ROOT_FIELDS,
                &|i| {
                    a.root(u32::try_from(i).unwrap_or(u32::MAX))
                        .map_or(String::new(), |r| format!("root \"{}\"", quoted(r.name)))
                },
                &mut out,
            ),
            _ => pool(&mut out, so, body),
        }
    }
    padding(&mut out, prev_end, a.file_len());
    Ok(out)
}
