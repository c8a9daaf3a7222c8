//! The `pycds._pycds` extension module: a thin `#[pymodule]` over `pycds-pyhook`.

use pyo3::prelude::*;

/// `pycds._pycds`
#[pymodule(gil_used = true)]
fn _pycds(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pycds_pyhook::register(m)
}
