//! External references: objects that live in the interpreter, not in the archive.
//!
//! Each one is an arena extern whose name is a short ASCII string (see
//! `spec/python-profile.md`). The loader resolves them to the runtime's own objects, so
//! identity (`x is None`, small ints, one-character strings) is preserved.

use pycds_arena::{Archive, ExternId};

use crate::error::PyFormatError;

/// The object types pycds stores in the archive; an object's `ob_type` is an extern slot
/// that names one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TypeTag {
    /// `code`
    Code = 1,
    /// `tuple`
    Tuple = 2,
    /// `str`
    Str = 3,
    /// `bytes`
    Bytes = 4,
    /// `int`
    Int = 5,
    /// `float`
    Float = 6,
    /// `complex`
    Complex = 7,
}

impl TypeTag {
    /// All tags.
    pub const ALL: [TypeTag; 7] = [
        TypeTag::Code,
        TypeTag::Tuple,
        TypeTag::Str,
        TypeTag::Bytes,
        TypeTag::Int,
        TypeTag::Float,
        TypeTag::Complex,
    ];

    /// The Python type name.
    pub fn name(self) -> &'static str {
        match self {
            TypeTag::Code => "code",
            TypeTag::Tuple => "tuple",
            TypeTag::Str => "str",
            TypeTag::Bytes => "bytes",
            TypeTag::Int => "int",
            TypeTag::Float => "float",
            TypeTag::Complex => "complex",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<TypeTag> {
        Some(match v {
            1 => TypeTag::Code,
            2 => TypeTag::Tuple,
            3 => TypeTag::Str,
            4 => TypeTag::Bytes,
            5 => TypeTag::Int,
            6 => TypeTag::Float,
            7 => TypeTag::Complex,
            _ => return None,
        })
    }
}

/// What an extern id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExternKind {
    /// A type object (used in `ob_type` slots only).
    Type(TypeTag),
    /// `None`
    None,
    /// `True`
    True,
    /// `False`
    False,
    /// `Ellipsis`
    Ellipsis,
    /// `()`
    EmptyTuple,
    /// `''`
    EmptyStr,
    /// `b''`
    EmptyBytes,
    /// A small int, -5..=256 (the runtime's static singletons).
    SmallInt(i16),
    /// A one-character latin-1 string (static singleton).
    Char(u8),
    /// A one-character latin-1 string that CPython had interned: the runtime's
    /// singleton passed through interning (which may yield another canonical object).
    InternedChar(u8),
    /// A one-byte bytes object (static singleton).
    Byte(u8),
    /// Any other str that CPython had interned: the name carries its characters
    /// ([`interned_str_name`]); resolved by creating the string and interning it, so
    /// that every module of the archive shares one object, as after normal imports.
    InternedStr,
}

/// Prefix of the names of [`ExternKind::InternedStr`] externs.
const ISTR: &[u8] = b"istr";

/// The extern name of an interned str of `kind` (1, 2 or 4 bytes per code point) whose
/// code points are `data` (little-endian code units): `istr1:`, `istr2:` or `istr4:`,
/// then `data`.
pub fn interned_str_name(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(data.len() + 6);
    name.extend_from_slice(ISTR);
    // (Any other kind gives a name `parse_interned_str` refuses.)
    name.push(b'0'.wrapping_add(kind));
    name.push(b':');
    name.extend_from_slice(data);
    name
}

/// The kind and code units of an [`ExternKind::InternedStr`] name, if it is canonical:
/// kind 1, 2 or 4; a whole number of code points; the narrowest kind for its characters
/// (as CPython stores every str), no code point beyond U+10FFFF; and more than one
/// character when kind 1 (one latin-1 character is an `ichar:` extern).
pub fn parse_interned_str(name: &[u8]) -> Option<(u8, &[u8])> {
    let rest = name.strip_prefix(ISTR)?;
    let (&digit, rest) = rest.split_first()?;
    let data = rest.strip_prefix(b":")?;
    let kind = digit.wrapping_sub(b'0');
    let ok = match kind {
        1 => data.len() >= 2,
        2 => {
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]));
            data.len() % 2 == 0 && !data.is_empty() && units.clone().any(|u| u > 0xff)
        }
        4 => {
            let units = data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            data.len() % 4 == 0
                && !data.is_empty()
                && units.clone().any(|u| u > 0xffff)
                && units.clone().all(|u| u <= 0x10_ffff)
        }
        _ => false,
    };
    ok.then_some((kind, data))
}

/// Smallest small int (`-_PY_NSMALLNEGINTS`).
pub const SMALL_INT_MIN: i64 = -5;
/// Largest small int (`_PY_NSMALLPOSINTS - 1`).
pub const SMALL_INT_MAX: i64 = 256;

impl ExternKind {
    /// The canonical extern name. [`ExternKind::InternedStr`] names carry the string's
    /// characters and are made by [`interned_str_name`]; for it this returns their common
    /// prefix `istr`, which is not a valid name by itself.
    pub fn name(self) -> String {
        match self {
            ExternKind::Type(t) => format!("type:{}", t.name()),
            ExternKind::None => "None".into(),
            ExternKind::True => "True".into(),
            ExternKind::False => "False".into(),
            ExternKind::Ellipsis => "Ellipsis".into(),
            ExternKind::EmptyTuple => "tuple:".into(),
            ExternKind::EmptyStr => "str:".into(),
            ExternKind::EmptyBytes => "bytes:".into(),
            ExternKind::SmallInt(i) => format!("int:{i}"),
            ExternKind::Char(c) => format!("char:{c:02x}"),
            ExternKind::InternedChar(c) => format!("ichar:{c:02x}"),
            ExternKind::Byte(b) => format!("byte:{b:02x}"),
            ExternKind::InternedStr => "istr".into(),
        }
    }

    /// Parse a canonical extern name (exact inverse of [`ExternKind::name`] and
    /// [`interned_str_name`]).
    pub fn parse(name: &[u8]) -> Option<ExternKind> {
        if name.starts_with(ISTR) {
            return parse_interned_str(name).map(|_| ExternKind::InternedStr);
        }
        let s = core::str::from_utf8(name).ok()?;
        let k = match s {
            "None" => ExternKind::None,
            "True" => ExternKind::True,
            "False" => ExternKind::False,
            "Ellipsis" => ExternKind::Ellipsis,
            "tuple:" => ExternKind::EmptyTuple,
            "str:" => ExternKind::EmptyStr,
            "bytes:" => ExternKind::EmptyBytes,
            _ => {
                if let Some(t) = s.strip_prefix("type:") {
                    ExternKind::Type(TypeTag::ALL.into_iter().find(|x| x.name() == t)?)
                } else if let Some(i) = s.strip_prefix("int:") {
                    // Canonical decimal only: no sign but '-', no leading zero, no "-0".
                    let digits = i.strip_prefix('-').unwrap_or(i);
                    if digits.is_empty()
                        || !digits.bytes().all(|b| b.is_ascii_digit())
                        || (digits.starts_with('0') && (digits.len() > 1 || i.starts_with('-')))
                    {
                        return None;
                    }
                    let v: i16 = i.parse().ok()?;
                    if !(SMALL_INT_MIN..=SMALL_INT_MAX).contains(&i64::from(v)) {
                        return None;
                    }
                    ExternKind::SmallInt(v)
                } else if let Some(h) = s.strip_prefix("char:") {
                    ExternKind::Char(parse_hex2(h)?)
                } else if let Some(h) = s.strip_prefix("ichar:") {
                    ExternKind::InternedChar(parse_hex2(h)?)
                } else if let Some(h) = s.strip_prefix("byte:") {
                    ExternKind::Byte(parse_hex2(h)?)
                } else {
                    return None;
                }
            }
        };
        // Non-canonical spellings ("int:+5", "char:A0", ...) were rejected above, without
        // formatting the canonical name (this runs for every extern at open).
        Some(k)
    }

    /// The Python type of the object this extern stands for (`None` for a type object
    /// or a singleton of another type).
    pub fn value_type(self) -> Option<TypeTag> {
        match self {
            ExternKind::EmptyTuple => Some(TypeTag::Tuple),
            ExternKind::EmptyStr
            | ExternKind::Char(_)
            | ExternKind::InternedChar(_)
            | ExternKind::InternedStr => Some(TypeTag::Str),
            ExternKind::EmptyBytes | ExternKind::Byte(_) => Some(TypeTag::Bytes),
            ExternKind::SmallInt(_) => Some(TypeTag::Int),
            _ => None,
        }
    }
}

impl ExternKind {
    /// Two-byte code of the kind (the extern table holds one per extern: most externs of a
    /// large archive are interned strings, and `ExternKind` itself takes four bytes).
    fn pack(self) -> u16 {
        match self {
            ExternKind::InternedStr => 0,
            ExternKind::None => 1,
            ExternKind::True => 2,
            ExternKind::False => 3,
            ExternKind::Ellipsis => 4,
            ExternKind::EmptyTuple => 5,
            ExternKind::EmptyStr => 6,
            ExternKind::EmptyBytes => 7,
            ExternKind::Type(t) => 0x10 | t as u16,
            // -5..=256 (checked by `parse`, the only producer): 0..=261.
            ExternKind::SmallInt(v) => 0x100 + (v + 5) as u16,
            ExternKind::Char(c) => 0x400 | u16::from(c),
            ExternKind::InternedChar(c) => 0x500 | u16::from(c),
            ExternKind::Byte(c) => 0x600 | u16::from(c),
        }
    }

    /// The kind of a code made by [`ExternKind::pack`].
    fn unpack(code: u16) -> Option<ExternKind> {
        let low = (code & 0xff) as u8;
        Some(match code {
            0 => ExternKind::InternedStr,
            1 => ExternKind::None,
            2 => ExternKind::True,
            3 => ExternKind::False,
            4 => ExternKind::Ellipsis,
            5 => ExternKind::EmptyTuple,
            6 => ExternKind::EmptyStr,
            7 => ExternKind::EmptyBytes,
            0x10..=0x1f => ExternKind::Type(TypeTag::from_u8(low & 0xf)?),
            0x100..=0x205 => ExternKind::SmallInt(code as i16 - 0x100 - 5),
            0x400..=0x4ff => ExternKind::Char(low),
            0x500..=0x5ff => ExternKind::InternedChar(low),
            0x600..=0x6ff => ExternKind::Byte(low),
            _ => return None,
        })
    }
}

/// Exactly two lowercase hex digits.
fn parse_hex2(h: &str) -> Option<u8> {
    if h.len() != 2 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u8::from_str_radix(h, 16).ok()
}

/// The archive's extern ids, decoded once per archive (cost: number of externs).
#[derive(Debug, Clone)]
pub struct ExternTable {
    /// [`ExternKind::pack`] codes, by id.
    kinds: Vec<u16>,
}

impl ExternTable {
    /// Decode every extern of `archive`; an unknown name makes the archive unusable. This
    /// runs at every open, so an `istr` name (one per distinct interned string: most of the
    /// externs of a large archive) is only classified by its prefix here; its characters are
    /// checked ([`parse_interned_str`]) when it is resolved, so a malformed one fails the
    /// spans that use it, and by [`ExternTable::check_interned_names`].
    pub fn from_archive(archive: &Archive<'_>) -> Result<ExternTable, PyFormatError> {
        let n = archive.extern_count();
        let mut t = ExternTable {
            kinds: Vec::with_capacity(n as usize),
        };
        for i in 0..n {
            let name = archive
                .extern_name(ExternId(i))
                .ok_or(PyFormatError::UnknownExtern { id: i })?;
            t.push(ExternId(i), name)?;
        }
        Ok(t)
    }

    /// An empty table, to [`ExternTable::push`] every extern into in id order (when the names
    /// come from elsewhere than an [`Archive`] view, e.g.
    /// `pycds_arena::LoadedArena::for_each_extern_name`).
    pub fn with_capacity(n: usize) -> ExternTable {
        ExternTable {
            kinds: Vec::with_capacity(n),
        }
    }

    /// Decode extern `id` (the next id: externs come in id order) from its name, as
    /// [`ExternTable::from_archive`] does.
    pub fn push(&mut self, id: ExternId, name: &[u8]) -> Result<(), PyFormatError> {
        let unknown = || PyFormatError::UnknownExtern { id: id.0 };
        if id.0 as usize != self.kinds.len() {
            return Err(unknown());
        }
        self.kinds.push(
            if name.starts_with(ISTR) {
                ExternKind::InternedStr
            } else {
                ExternKind::parse(name).ok_or_else(unknown)?
            }
            .pack(),
        );
        Ok(())
    }

    /// Check the characters of every [`ExternKind::InternedStr`] name of `archive` (the table
    /// made from it), as resolving them would (for a full verification of an archive).
    pub fn check_interned_names(&self, archive: &Archive<'_>) -> Result<(), PyFormatError> {
        for (i, &k) in self.kinds.iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            if ExternKind::unpack(k) == Some(ExternKind::InternedStr)
                && archive
                    .extern_name(ExternId(id))
                    .and_then(parse_interned_str)
                    .is_none()
            {
                return Err(PyFormatError::UnknownExtern { id });
            }
        }
        Ok(())
    }

    /// What `id` stands for.
    pub fn kind(&self, id: ExternId) -> Option<ExternKind> {
        self.kinds
            .get(id.0 as usize)
            .and_then(|&k| ExternKind::unpack(k))
    }

    /// Number of externs.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let mut all = vec![
            ExternKind::None,
            ExternKind::True,
            ExternKind::False,
            ExternKind::Ellipsis,
            ExternKind::EmptyTuple,
            ExternKind::EmptyStr,
            ExternKind::EmptyBytes,
        ];
        all.extend(TypeTag::ALL.map(ExternKind::Type));
        all.extend((-5..=256).map(ExternKind::SmallInt));
        all.extend((0..=255).map(ExternKind::Char));
        all.extend((0..=255).map(ExternKind::InternedChar));
        all.extend((0..=255).map(ExternKind::Byte));
        all.push(ExternKind::InternedStr);
        let mut codes = std::collections::HashSet::new();
        for k in all {
            if k != ExternKind::InternedStr {
                assert_eq!(ExternKind::parse(k.name().as_bytes()), Some(k), "{k:?}");
            }
            // The extern table's two-byte codes: one per kind, and back.
            assert!(codes.insert(k.pack()), "{k:?}");
            assert_eq!(ExternKind::unpack(k.pack()), Some(k), "{k:?}");
        }
        for code in [8u16, 0x0f, 0x18, 0x206, 0x2ff, 0x3ff, 0x700, u16::MAX] {
            assert_eq!(ExternKind::unpack(code), None, "{code:#x}");
        }
        for (kind, data) in [
            (1u8, &b"ab"[..]),
            (1, b"\xe9t\xe9"),
            (2, &[0x00, 0x01]),
            (2, &[b'a', 0, 0x3b, 0x04]),
            (4, &[0, 0xf6, 0x01, 0]),
            (4, &[0xff, 0xff, 0x10, 0, b'x', 0, 0, 0]),
        ] {
            let name = interned_str_name(kind, data);
            assert_eq!(ExternKind::parse(&name), Some(ExternKind::InternedStr));
            assert_eq!(parse_interned_str(&name), Some((kind, data)));
        }
        for bad in [
            &b"istr"[..],
            b"istr1:",
            b"istr1:a",
            b"istr1x",
            b"istr3:abc",
            b"istr2:a",
            b"istr2:a\0",
            b"istr2:",
            b"istr4:a\0\0\0",
            b"istr4:\0\0\x11\0",
            b"istr4:\0\0\x01",
            b"istr:ab",
        ] {
            assert_eq!(ExternKind::parse(bad), None, "{bad:?}");
        }
        for bad in [
            "int:257",
            "int:-6",
            "int:+5",
            "int:05",
            "int:-0",
            "int:-05",
            "int:",
            "int:-",
            "int:1.0",
            "char:A0",
            "char:1",
            "type:list",
            "none",
            "",
        ] {
            assert_eq!(ExternKind::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
