//! `pycds-pyhook`: the CPython side of pycds.
//!
//! Internal component crate of pycds. It dumps live CPython objects into archives
//! ([`dump`]), loads them back in place ([`load`]), checks that the running interpreter
//! is one pycds supports ([`probe`]) and exposes all that to Python ([`api`]); the
//! `pycds-pybind` cdylib only registers it as `pycds._pycds`. Raw CPython operations
//! live in one module, `ffi`.

// Archives store little-endian data (the profile's layouts, `istr` extern names), and the
// dumper copies the interpreter's memory as it is.
#[cfg(not(target_endian = "little"))]
compile_error!("pycds supports little-endian hosts only");

pub mod api;
pub mod dump;
pub mod error;
mod ffi;
pub mod finder;
pub mod load;
pub mod modmeta;
pub mod probe;

use pyo3::prelude::*;

/// `pycds._pycds.__getattr__`: the exception classes, created on first access.
#[pyfunction]
#[pyo3(name = "__getattr__")]
fn module_getattr(py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
    let t = match name {
        "PycdsError" => py.get_type::<error::PycdsError>(),
        "CorruptArchiveError" => py.get_type::<error::CorruptArchiveError>(),
        "IncompatibleArchiveError" => py.get_type::<error::IncompatibleArchiveError>(),
        "UnsupportedObjectError" => py.get_type::<error::UnsupportedObjectError>(),
        "UnsupportedInterpreterError" => py.get_type::<error::UnsupportedInterpreterError>(),
        "_CompilerFlagsMismatch" => py.get_type::<error::CompilerFlagsMismatch>(),
        _ => {
            return Err(pyo3::exceptions::PyAttributeError::new_err(format!(
                "module 'pycds._pycds' has no attribute {name:?}"
            )))
        }
    };
    Ok(t.into_any().unbind())
}

/// Register the native API on `m` (the `pycds._pycds` module).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
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
    // The exception classes are made on first use (module __getattr__, PEP 562): the
    // import hook loads this module in every SHARE process, and each class costs a type
    // creation that a process with no error never needs.
    m.add_function(wrap_pyfunction!(module_getattr, m)?)?;
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
