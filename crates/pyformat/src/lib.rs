//! `pycds-pyformat`: CPython object layouts on the arena (being written).
#![forbid(unsafe_code)]
