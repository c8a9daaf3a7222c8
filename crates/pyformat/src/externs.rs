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
}

/// Smallest small int (`-_PY_NSMALLNEGINTS`).
pub const SMALL_INT_MIN: i64 = -5;
/// Largest small int (`_PY_NSMALLPOSINTS - 1`).
pub const SMALL_INT_MAX: i64 = 256;

impl ExternKind {
    /// The canonical extern name.
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
        }
    }

    /// Parse a canonical extern name (exact inverse of [`ExternKind::name`]).
    pub fn parse(name: &[u8]) -> Option<ExternKind> {
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
            ExternKind::EmptyStr | ExternKind::Char(_) | ExternKind::InternedChar(_) => {
                Some(TypeTag::Str)
            }
            ExternKind::EmptyBytes | ExternKind::Byte(_) => Some(TypeTag::Bytes),
            ExternKind::SmallInt(_) => Some(TypeTag::Int),
            _ => None,
        }
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
    kinds: Vec<ExternKind>,
}

impl ExternTable {
    /// Decode every extern of `archive`; an unknown name makes the archive unusable.
    pub fn from_archive(archive: &Archive<'_>) -> Result<ExternTable, PyFormatError> {
        let n = archive.extern_count();
        let mut kinds = Vec::with_capacity(n as usize);
        for i in 0..n {
            let name = archive
                .extern_name(ExternId(i))
                .ok_or(PyFormatError::UnknownExtern { id: i })?;
            kinds.push(ExternKind::parse(name).ok_or(PyFormatError::UnknownExtern { id: i })?);
        }
        Ok(ExternTable { kinds })
    }

    /// What `id` stands for.
    pub fn kind(&self, id: ExternId) -> Option<ExternKind> {
        self.kinds.get(id.0 as usize).copied()
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
        for k in all {
            assert_eq!(ExternKind::parse(k.name().as_bytes()), Some(k), "{k:?}");
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
