//! pycds's per-span and per-root metadata (opaque bytes to the arena).
//!
//! Span meta (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `PYS2` |
//! | 4 | 4 | `n_intern`: strings to intern at load |
//! | 8 | 4 | `n_frozen`: slots whose tuple becomes a frozenset at load |
//! | 12 | 4 | `n_code`: code objects (they get fresh `co_version`s at load) |
//! | 16 | 4 | `n_objects`: objects in the span |
//! | 20 | 4·n_intern | span-relative offsets of the str objects to intern, strictly increasing |
//! | … | 4·n_frozen | span-relative offsets of the frozenset slots, strictly increasing |
//! | … | 4·n_code | span-relative offsets of the code objects, strictly increasing |
//!
//! Root meta: one byte of [`RootKind`], then the client's bytes.

use crate::error::PyFormatError;

const SPAN_MAGIC: &[u8; 4] = b"PYS2";
const HEADER: usize = 20;

/// Encode span metadata.
pub fn encode_span_meta(interns: &[u32], frozen: &[u32], codes: &[u32], objects: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 4 * (interns.len() + frozen.len() + codes.len()));
    out.extend_from_slice(SPAN_MAGIC);
    for n in [interns.len(), frozen.len(), codes.len()] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out.extend_from_slice(&objects.to_le_bytes());
    for v in interns.iter().chain(frozen).chain(codes) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decoded view of span metadata.
#[derive(Debug, Clone, Copy)]
pub struct SpanMeta<'a> {
    objects: u32,
    interns: &'a [u8],
    frozen: &'a [u8],
    codes: &'a [u8],
}

impl<'a> SpanMeta<'a> {
    /// Parse and bounds-check; ordering is checked while iterating.
    pub fn parse(meta: &'a [u8]) -> Result<SpanMeta<'a>, PyFormatError> {
        let bad = |what| PyFormatError::BadSpanMeta { what };
        if meta.len() < HEADER || &meta[..4] != SPAN_MAGIC {
            return Err(bad("bad magic (written by another pycds version?)"));
        }
        let word = |i: usize| u32::from_le_bytes([meta[i], meta[i + 1], meta[i + 2], meta[i + 3]]);
        let (ni, nf, nc) = (word(4) as usize, word(8) as usize, word(12) as usize);
        let need = ni
            .checked_add(nf)
            .and_then(|n| n.checked_add(nc))
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(HEADER))
            .ok_or(bad("counts overflow"))?;
        if need != meta.len() {
            return Err(bad("length does not match counts"));
        }
        let f = HEADER + 4 * ni;
        let c = f + 4 * nf;
        Ok(SpanMeta {
            objects: word(16),
            interns: &meta[HEADER..f],
            frozen: &meta[f..c],
            codes: &meta[c..],
        })
    }

    /// Span-relative offsets of strings to intern.
    pub fn interns(&self) -> impl Iterator<Item = u32> + 'a {
        words(self.interns)
    }

    /// Number of strings to intern.
    pub fn intern_count(&self) -> usize {
        self.interns.len() / 4
    }

    /// Span-relative offsets of frozenset slots.
    pub fn frozen(&self) -> impl Iterator<Item = u32> + 'a {
        words(self.frozen)
    }

    /// Number of objects in the span.
    pub fn objects(&self) -> u32 {
        self.objects
    }

    /// Span-relative offsets of the code objects.
    pub fn codes(&self) -> impl Iterator<Item = u32> + 'a {
        words(self.codes)
    }
}

fn words(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// How a root's value is reached from its arena object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RootKind {
    /// The arena object is the value.
    Object = 0,
    /// The arena object is a 1-tuple holding the value (used for values that are not
    /// archive objects themselves: singletons, small ints, frozensets).
    Holder = 1,
}

/// Encode a root's metadata.
pub fn encode_root_meta(kind: RootKind, client: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + client.len());
    v.push(kind as u8);
    v.extend_from_slice(client);
    v
}

/// Decode a root's metadata into its kind and the client's bytes.
pub fn decode_root_meta(meta: &[u8]) -> Result<(RootKind, &[u8]), PyFormatError> {
    match meta.split_first() {
        Some((0, rest)) => Ok((RootKind::Object, rest)),
        Some((1, rest)) => Ok((RootKind::Holder, rest)),
        _ => Err(PyFormatError::BadRootMeta {
            what: "unknown root kind",
        }),
    }
}

/// For each span of `a`, its roots as `(object offset, is a holder tuple)`: what the
/// checker must confirm are objects of that span ([`crate::Checker::check_span`]).
/// Cost: number of roots.
pub fn span_roots(a: &pycds_arena::Archive<'_>) -> Result<Vec<Vec<(u64, bool)>>, PyFormatError> {
    let mut out = vec![Vec::new(); a.span_count() as usize];
    for i in 0..a.root_count() {
        let r = a.root(i).ok_or(PyFormatError::BadRootMeta {
            what: "missing root",
        })?;
        let (kind, _) = decode_root_meta(r.meta)?;
        if let Some(v) = out.get_mut(r.span.0 as usize) {
            v.push((r.object, kind == RootKind::Holder));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_meta_round_trip() {
        let m = encode_span_meta(&[8, 64], &[24], &[0, 96], 7);
        let p = SpanMeta::parse(&m).unwrap();
        assert_eq!(p.interns().collect::<Vec<_>>(), vec![8, 64]);
        assert_eq!(p.frozen().collect::<Vec<_>>(), vec![24]);
        assert_eq!(p.codes().collect::<Vec<_>>(), vec![0, 96]);
        assert_eq!(p.objects(), 7);
        for cut in 0..m.len() {
            assert!(SpanMeta::parse(&m[..cut]).is_err());
        }
        let mut bad = m.clone();
        bad[12] = 1;
        assert!(SpanMeta::parse(&bad).is_err());
        let mut old = m.clone();
        old[3] = b'1';
        assert!(SpanMeta::parse(&old).is_err());
    }

    #[test]
    fn root_meta_round_trip() {
        let m = encode_root_meta(RootKind::Holder, b"abc");
        assert_eq!(
            decode_root_meta(&m).unwrap(),
            (RootKind::Holder, &b"abc"[..])
        );
        assert!(decode_root_meta(&[7]).is_err());
        assert!(decode_root_meta(&[]).is_err());
    }
}
