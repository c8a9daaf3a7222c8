//! `pycds-pyhook`: the CPython side of pycds.
//!
//! Internal component crate of pycds. It dumps live CPython objects into archives
//! ([`dump`]), loads them back in place ([`load`]), checks that the running interpreter
//! is one pycds supports ([`probe`]) and exposes all that to Python ([`api`]); the
//! `pycds-pybind` cdylib only registers it as `pycds._pycds`. Raw CPython operations
//! live in one module, `ffi`.

pub mod api;
pub mod dump;
pub mod error;
mod ffi;
pub mod finder;
pub mod load;
pub mod modmeta;
pub mod probe;

use pyo3::prelude::*;

/// Register the native API on `m` (the `pycds._pycds` module).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(api::write_archive, m)?)?;
    m.add_function(wrap_pyfunction!(api::save, m)?)?;
    m.add_function(wrap_pyfunction!(api::load, m)?)?;
    m.add_function(wrap_pyfunction!(api::verify, m)?)?;
    m.add_function(wrap_pyfunction!(api::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(api::check_interpreter, m)?)?;
    m.add_function(wrap_pyfunction!(api::module_meta, m)?)?;
    m.add_function(wrap_pyfunction!(api::decode_module_meta, m)?)?;
    m.add_class::<api::Archive>()?;
    m.add_class::<finder::Finder>()?;
    m.add("PycdsError", py.get_type::<error::PycdsError>())?;
    m.add(
        "CorruptArchiveError",
        py.get_type::<error::CorruptArchiveError>(),
    )?;
    m.add(
        "IncompatibleArchiveError",
        py.get_type::<error::IncompatibleArchiveError>(),
    )?;
    m.add(
        "_CompilerFlagsMismatch",
        py.get_type::<error::CompilerFlagsMismatch>(),
    )?;
    m.add(
        "UnsupportedObjectError",
        py.get_type::<error::UnsupportedObjectError>(),
    )?;
    m.add(
        "UnsupportedInterpreterError",
        py.get_type::<error::UnsupportedInterpreterError>(),
    )?;
    m.add(
        "FORMAT_VERSION",
        format!(
            "{}.{}",
            pycds_arena::FORMAT_MAJOR,
            pycds_arena::FORMAT_MINOR
        ),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
