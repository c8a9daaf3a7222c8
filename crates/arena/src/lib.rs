//! `pycds-arena`: a versioned, relocatable, checksummed archive of object graphs, loaded in place.
//!
//! An *arena* file holds a heap of objects split into *spans*, plus tables. Words inside a span
//! can be *internal slots* (a base-relative offset, turned into an absolute address at load) or
//! *external slots* (an extern id, replaced by an address the client resolves by name). Named
//! *roots* point at objects. The crate knows nothing about what the objects are; the format is
//! specified for third-party readers in `spec/format.md`.
//!
//! * Write: [`ArenaBuilder`] → [`ArenaBuilder::finish`] (bytes) or
//!   [`ArenaBuilder::write_atomic`] (temp file + fsync + rename).
//! * Read: [`Archive::from_bytes`] validates header and tables (cost independent of the heap: it
//!   does not read the slot bitmaps, whose bytes the span CRCs cover);
//!   [`Archive::verify_span`] checks one span's contents and bitmaps; [`Archive::verify_all`] is
//!   the full check (every span, then the BITMAPS section CRC).
//! * Load: [`LoadedArena::open`] ([`LoadStrategy::Map`] or [`LoadStrategy::Read`]) or
//!   [`LoadedArena::from_bytes`], then [`LoadedArena::load_span`] per span on first use.
//!
//! ```
//! use pycds_arena::{ArenaBuilder, LoadedArena, SpanId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut b = ArenaBuilder::new(*b"example-profile-0000000000000000");
//! b.set_producer("doctest");
//! let print = b.extern_id(b"builtins.print");
//!
//! // Span 0: a 16-byte object whose second word references an extern.
//! let s0 = b.begin_span(&[]);
//! let leaf = b.alloc(16, 8);
//! b.bytes_mut(leaf, 8).copy_from_slice(&42u64.to_le_bytes());
//! b.set_external(leaf + 8, print);
//! b.end_span(b"leaf meta");
//!
//! // Span 1 depends on span 0: its object points at `leaf`.
//! let s1 = b.begin_span(&[s0]);
//! let node = b.alloc(8, 8);
//! b.set_internal(node, leaf);
//! b.end_span(b"");
//!
//! b.add_root(b"leaf", leaf, s0, b"");
//! b.add_root(b"node", node, s1, b"root meta");
//! let bytes = b.finish()?;
//!
//! let arena = LoadedArena::from_bytes(&bytes)?;
//! let root = arena.archive().find_root(b"node").expect("root exists");
//! assert_eq!(root.meta, b"root meta");
//! let print_addr = 0x1000_u64; // what a real client would look up by name
//! arena.load_span::<std::convert::Infallible>(
//!     root.span,
//!     &mut |_view| Ok(()),
//!     &mut |_id, name| {
//!         assert_eq!(name, b"builtins.print");
//!         Ok(print_addr)
//!     },
//! )?;
//! assert!(arena.is_loaded(SpanId(0)), "dependencies load first");
//!
//! // Read the relocated pointer back: it is the absolute address of `leaf`.
//! // SAFETY: span 1 is loaded, `root.object` is an 8-aligned offset inside it (base() is
//! // page-aligned), and no other thread accesses this memory.
//! let ptr = unsafe { arena.base().add(root.object as usize).cast::<u64>().read() };
//! assert_eq!(ptr, arena.base() as u64 + leaf);
//! // And the extern slot in span 0 holds the resolved address.
//! // SAFETY: as above, for span 0 (loaded as a dependency).
//! let ext = unsafe { arena.base().add(leaf as usize + 8).cast::<u64>().read() };
//! assert_eq!(ext, print_addr);
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

pub mod dump;
pub mod error;
pub mod layout;
pub mod load;
pub mod read;
mod validate;
pub mod write;

pub use error::{ArenaError, ErrorKind};
pub use layout::{FORMAT_MAJOR, FORMAT_MINOR, HEAP_START};
pub use load::{LoadError, LoadStrategy, LoadedArena};
pub use read::{Archive, Deps, Root, Slot, SpanInfo, SpanView};
pub use validate::REQUIREMENTS;
pub use write::{ArenaBuilder, ExternId, SpanId};
