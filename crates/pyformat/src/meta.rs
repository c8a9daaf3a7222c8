//! pycds's per-span and per-root metadata (opaque bytes to the arena).
//!
//! Span meta (little-endian), 20 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic: `PYS4` (an ordinary span) or `PYT4` (a *transient* span, below) |
//! | 4 | 4 | `n_frozen`: slots whose tuple becomes a frozenset at load |
//! | 8 | 4 | `n_code`: code objects (they get fresh `co_version`s at load) |
//! | 12 | 4 | `n_objects`: objects in the span |
//! | 16 | 4 | `lists`: span-relative offset of the span's lists, where its objects end |
//!
//! The lists are the last bytes of the span itself (so they are read, and covered by the
//! span CRC, only when the span is loaded, instead of growing the tables read at open):
//! from `lists`, `n_frozen` then `n_code` u32 span-relative offsets (the frozenset slots,
//! the code objects; each list strictly increasing), then, in a transient span only,
//! `n_objects` u32 span-relative offsets of every object (strictly increasing), then zero
//! padding to the span's end (a multiple of 8).
//!
//! A *transient* span holds what a normal import frees once a module body has run: the
//! module's and its class bodies' code objects with their private parts. Its objects carry
//! [`crate::Layout::transient_refcnt`] (a real, mortal count), it has exactly one dependency
//! (its module's ordinary span), and its tuple items may refer to objects of that
//! dependency. The loader may give its memory back once every count is unchanged.
//!
//! Root meta: one byte of [`RootKind`], then the client's bytes.

use crate::error::PyFormatError;

const SPAN_MAGIC: &[u8; 4] = b"PYS4";
const TRANSIENT_MAGIC: &[u8; 4] = b"PYT4";

/// Whether span metadata `meta` is a transient span's (by its magic alone, without the
/// span's bytes: what a loader checks of a dependency before loading anything).
pub fn is_transient(meta: &[u8]) -> bool {
    meta.starts_with(TRANSIENT_MAGIC)
}
/// Length of the span metadata.
pub const SPAN_META_LEN: usize = 20;

/// Bytes of the lists trailer for these counts, padded to 8 (`n_listed`: entries of the
/// object list, 0 for an ordinary span).
pub fn lists_len(n_frozen: usize, n_code: usize, n_listed: usize) -> usize {
    (4 * (n_frozen + n_code + n_listed)).next_multiple_of(8)
}

/// Encode the lists trailer (see the module documentation); `lists_len` bytes. `objects` is
/// the object list of a transient span (empty for an ordinary one).
pub fn encode_span_lists(frozen: &[u32], codes: &[u32], objects: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lists_len(frozen.len(), codes.len(), objects.len()));
    for v in frozen.iter().chain(codes).chain(objects) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(8), 0);
    out
}

/// Encode span metadata for lists (of these lengths) starting at span-relative `lists`.
pub fn encode_span_meta(
    n_frozen: usize,
    n_code: usize,
    objects: u32,
    lists: u32,
    transient: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SPAN_META_LEN);
    out.extend_from_slice(if transient {
        TRANSIENT_MAGIC
    } else {
        SPAN_MAGIC
    });
    for n in [n_frozen, n_code] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out.extend_from_slice(&objects.to_le_bytes());
    out.extend_from_slice(&lists.to_le_bytes());
    out
}

/// Decoded span metadata with its lists (borrowed from the span's bytes).
#[derive(Debug, Clone, Copy)]
pub struct SpanMeta<'a> {
    objects: u32,
    objects_end: u64,
    transient: bool,
    frozen: &'a [u8],
    codes: &'a [u8],
    listed: &'a [u8],
}

impl<'a> SpanMeta<'a> {
    /// Parse the metadata of a span whose heap bytes are `span`, and bounds-check its lists
    /// (they must end the span exactly, zero-padded); ordering is checked while iterating.
    pub fn parse(meta: &[u8], span: &'a [u8]) -> Result<SpanMeta<'a>, PyFormatError> {
        let bad = |what| PyFormatError::BadSpanMeta { what };
        if meta.len() != SPAN_META_LEN {
            return Err(bad("bad magic (written by another pycds version?)"));
        }
        let transient = match &meta[..4] {
            m if m == SPAN_MAGIC => false,
            m if m == TRANSIENT_MAGIC => true,
            _ => return Err(bad("bad magic (written by another pycds version?)")),
        };
        let word = |i: usize| u32::from_le_bytes([meta[i], meta[i + 1], meta[i + 2], meta[i + 3]]);
        let (nf, nc) = (word(4) as usize, word(8) as usize);
        let nl = if transient { word(12) as usize } else { 0 };
        let at = word(16) as usize;
        let n = nf
            .checked_add(nc)
            .and_then(|n| n.checked_add(nl))
            .and_then(|n| n.checked_mul(4))
            .ok_or(bad("counts overflow"))?;
        let end = at
            .checked_add(n)
            .filter(|_| at % 8 == 0)
            .ok_or(bad("lists misplaced"))?;
        if end.next_multiple_of(8) != span.len() {
            return Err(bad("lists do not end the span"));
        }
        let lists = span.get(at..end).ok_or(bad("lists outside the span"))?;
        if span.get(end..).map_or(true, |p| p.iter().any(|&b| b != 0)) {
            return Err(bad("non-zero padding after the lists"));
        }
        let (frozen, rest) = lists.split_at(4 * nf);
        let (codes, listed) = rest.split_at(4 * nc);
        Ok(SpanMeta {
            objects: word(12),
            objects_end: at as u64,
            transient,
            frozen,
            codes,
            listed,
        })
    }

    /// Whether this is a transient span (see the module documentation).
    pub fn transient(&self) -> bool {
        self.transient
    }

    /// Span-relative offsets of every object of a transient span (empty for an ordinary
    /// span).
    pub fn listed(&self) -> impl Iterator<Item = u32> + 'a {
        words(self.listed)
    }

    /// Span-relative offsets of frozenset slots.
    pub fn frozen(&self) -> impl Iterator<Item = u32> + 'a {
        words(self.frozen)
    }

    /// Number of objects in the span.
    pub fn objects(&self) -> u32 {
        self.objects
    }

    /// Span-relative offset where the objects end (and the lists begin).
    pub fn objects_end(&self) -> u64 {
        self.objects_end
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

/// The single dependency of span `id` of `a` as `(start, length)`, if it has exactly one:
/// the `dep` argument of [`crate::Checker::check_span`].
pub fn single_dependency(
    a: &pycds_arena::Archive<'_>,
    id: pycds_arena::SpanId,
) -> Option<(u64, u64)> {
    let s = a.span(id)?;
    if s.deps.len() != 1 {
        return None;
    }
    let d = a.span(s.deps.get(0)?)?;
    Some((d.start, d.len))
}

/// The order in which to check every span of `a` with one [`crate::Checker`] so that the
/// references of each span with a single dependency into it can be checked: id order,
/// except that a span that is some span's single dependency comes right after that span
/// (as a load checks them: a span, then its dependencies), and after each such span.
pub fn check_order(a: &pycds_arena::Archive<'_>) -> Vec<pycds_arena::SpanId> {
    use pycds_arena::SpanId;
    let n = a.span_count();
    let single = |i: u32| {
        a.span(SpanId(i))
            .filter(|s| s.deps.len() == 1)
            .and_then(|s| s.deps.get(0))
    };
    let mut is_dep = vec![false; n as usize];
    for i in 0..n {
        if let Some(d) = single(i).and_then(|d| is_dep.get_mut(d.0 as usize)) {
            *d = true;
        }
    }
    let mut order = Vec::with_capacity(n as usize);
    for i in 0..n {
        if let Some(d) = single(i) {
            order.push(SpanId(i));
            order.push(d);
        } else if !is_dep.get(i as usize).copied().unwrap_or(false) {
            order.push(SpanId(i));
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_meta_round_trip() {
        let lists = encode_span_lists(&[24, 64], &[0, 96, 104], &[]);
        assert_eq!(lists.len(), lists_len(2, 3, 0));
        let mut span = vec![0u8; 128];
        span.extend_from_slice(&lists);
        let m = encode_span_meta(2, 3, 7, 128, false);
        let p = SpanMeta::parse(&m, &span).unwrap();
        assert_eq!(p.frozen().collect::<Vec<_>>(), vec![24, 64]);
        assert_eq!(p.codes().collect::<Vec<_>>(), vec![0, 96, 104]);
        assert_eq!((p.objects(), p.objects_end()), (7, 128));
        for cut in 0..m.len() {
            assert!(SpanMeta::parse(&m[..cut], &span).is_err());
        }
        for cut in [8, 128, 136, span.len() - 8] {
            assert!(SpanMeta::parse(&m, &span[..cut]).is_err(), "{cut}");
        }
        let mut longer = span.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(SpanMeta::parse(&m, &longer).is_err());
        let mut dirty = span.clone();
        *dirty.last_mut().unwrap() = 1;
        assert!(SpanMeta::parse(&m, &dirty).is_err());
        let mut bad = m.clone();
        bad[8] = 9;
        assert!(SpanMeta::parse(&bad, &span).is_err());
        let mut old = m.clone();
        old[3] = b'3';
        assert!(SpanMeta::parse(&old, &span).is_err());
        let misaligned = encode_span_meta(2, 3, 7, 124, false);
        assert!(SpanMeta::parse(&misaligned, &span[4..]).is_err());
        assert!(!p.transient() && p.listed().next().is_none());
    }

    #[test]
    fn transient_span_meta_round_trip() {
        let lists = encode_span_lists(&[24], &[0], &[0, 16, 32]);
        assert_eq!(lists.len(), lists_len(1, 1, 3));
        let mut span = vec![0u8; 64];
        span.extend_from_slice(&lists);
        let m = encode_span_meta(1, 1, 3, 64, true);
        let p = SpanMeta::parse(&m, &span).unwrap();
        assert!(p.transient());
        assert_eq!(p.frozen().collect::<Vec<_>>(), vec![24]);
        assert_eq!(p.codes().collect::<Vec<_>>(), vec![0]);
        assert_eq!(p.listed().collect::<Vec<_>>(), vec![0, 16, 32]);
        // The same bytes read as an ordinary span: the lists do not end the span.
        let mut ordinary = m.clone();
        ordinary[..4].copy_from_slice(b"PYS4");
        assert!(SpanMeta::parse(&ordinary, &span).is_err());
        // An object count the list does not hold.
        let more = encode_span_meta(1, 1, 5, 64, true);
        assert!(SpanMeta::parse(&more, &span).is_err());
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
