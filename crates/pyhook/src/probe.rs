//! Which interpreter is running, and whether pycds's layouts are right for it.
//!
//! Checked once per process, before any archive is written or used:
//! 1. CPython 3.11–3.13, release build, GIL, no `Py_TRACE_REFS`;
//! 2. every entry of the layout probe compiled against this interpreter's headers equals
//!    `pycds-pyformat`'s layout;
//! 3. `__basicsize__` / `__itemsize__` of every archived type match the layout at run time
//!    (catches an extension built for another patch release);
//! 4. on 3.13, the function-version counter's probed offset passes a self-check.
#![allow(unsafe_code)] // one call: the version-counter self-check, see its SAFETY comment

use std::sync::OnceLock;

use pycds_pyformat::{Fingerprint, Layout, PyVersion, TypeTag};
use pyo3::prelude::*;

use crate::error::{HookError, HookResult};
use crate::ffi;

/// What pycds knows about the running interpreter.
#[derive(Debug)]
pub struct Runtime {
    /// Verified object layout.
    pub layout: &'static Layout,
    /// The fingerprint archives must carry.
    pub fingerprint: Fingerprint,
    /// 3.13: verified offset of `interp->func_state.next_version`.
    pub version_counter: Option<usize>,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The verified runtime description, or why pycds cannot work in this interpreter.
pub fn runtime(py: Python<'_>) -> HookResult<&'static Runtime> {
    if !ffi::in_main_interpreter() {
        return Err(HookError::Interpreter(
            "pycds archives are only used in the main interpreter, not in sub-interpreters".into(),
        ));
    }
    let r = RUNTIME.get_or_init(|| detect(py).map_err(|e| e.to_string()));
    r.as_ref().map_err(|e| HookError::Interpreter(e.clone()))
}

fn detect(py: Python<'_>) -> HookResult<Runtime> {
    let sys = py.import("sys")?;
    let implementation: String = sys.getattr("implementation")?.getattr("name")?.extract()?;
    let (major, minor): (u32, u32) = sys
        .getattr("version_info")?
        .get_item(0)?
        .extract::<u32>()
        .and_then(|a| {
            Ok((
                a,
                sys.getattr("version_info")?.get_item(1)?.extract::<u32>()?,
            ))
        })?;
    let version = PyVersion::from_major_minor(major, minor)
        .filter(|_| implementation == "cpython")
        .ok_or_else(|| {
            HookError::Interpreter(format!(
            "pycds supports CPython 3.11, 3.12 and 3.13; this is {implementation} {major}.{minor}"
        ))
        })?;
    let abiflags: String = sys.getattr("abiflags")?.extract()?;
    let debug = abiflags.contains('d');
    let trace_refs = sys.hasattr("getobjects")?;
    // Free-threaded builds carry 't' in their ABI flags (and could not load this
    // extension, built for the GIL ABI, anyway).
    let gil_disabled = abiflags.contains('t');
    if debug || trace_refs || gil_disabled {
        return Err(HookError::Interpreter(format!(
            "pycds supports release builds with the GIL only; this interpreter is {}",
            [
                (debug, "a debug build"),
                (trace_refs, "a Py_TRACE_REFS build"),
                (gil_disabled, "free-threaded")
            ]
            .iter()
            .filter(|x| x.0)
            .map(|x| x.1)
            .collect::<Vec<_>>()
            .join(", ")
        )));
    }
    let layout = version.layout();

    // 2. The compiled probe.
    let mut diffs = Vec::new();
    let mut counter = None;
    for (name, value) in ffi::probe_entries() {
        match name.as_str() {
            "py_version_hex" => {
                let (pm, pn) = ((value >> 24) & 0xff, (value >> 16) & 0xff);
                if (pm, pn) != (i64::from(major), i64::from(minor)) {
                    diffs.push(format!(
                        "extension built for {pm}.{pn}, running {major}.{minor}"
                    ));
                }
            }
            "interp_next_func_version" => counter = usize::try_from(value).ok(),
            _ => {
                if let Some(want) = layout.probe_expectation(&name) {
                    if want != value {
                        diffs.push(format!("{name}: pycds {want}, interpreter {value}"));
                    }
                }
            }
        }
    }
    // 3. Run-time type sizes.
    // sizeof(PyUnicodeObject): the compact header plus the legacy data pointer.
    let l = layout;
    let str_basic = l.str_.compact_size + 8;
    let checks = [
        (TypeTag::Code, l.code.adaptive, 2),
        (TypeTag::Tuple, l.tuple_items, 8),
        (TypeTag::Bytes, l.bytes_data + 1, 1),
        (TypeTag::Str, str_basic, 0),
        (TypeTag::Int, l.long_digits, 4),
        (TypeTag::Float, l.float_size, 0),
        (TypeTag::Complex, l.complex_size, 0),
    ];
    for (t, basic, item) in checks {
        let (b, i) = ffi::type_sizes(t);
        if (b, i) != (basic as isize, item as isize) {
            diffs.push(format!(
                "{}: size {b}/{i}, pycds expects {basic}/{item}",
                t.name()
            ));
        }
    }
    if !diffs.is_empty() {
        return Err(HookError::Interpreter(format!(
            "object layouts of this interpreter differ from what pycds was built for: {}",
            diffs.join("; ")
        )));
    }
    // 4. Function-version counter (3.13 only: 3.12 assigns versions lazily from 0).
    let version_counter = match (version, counter, l.code.version) {
        (PyVersion::V3_13, Some(off), Some(field)) => {
            // SAFETY: the offset comes from the probe compiled against this interpreter's
            // headers, whose layout entries all matched above; the GIL is held.
            let ok = unsafe { ffi::version_counter_self_check(off, field) };
            ok.then_some(off)
        }
        _ => None,
    };

    let fingerprint = fingerprint(py, version)?;
    Ok(Runtime {
        layout,
        fingerprint,
        version_counter,
    })
}

fn fingerprint(py: Python<'_>, _version: PyVersion) -> HookResult<Fingerprint> {
    let sys = py.import("sys")?;
    let ext = py.import("_frozen_importlib_external")?;
    let magic: Vec<u8> = ext.getattr("MAGIC_NUMBER")?.extract()?;
    let xopts = sys.getattr("_xoptions")?;
    let os = py.import("os")?;
    let env_ndr = os
        .getattr("environ")?
        .call_method1("get", ("PYTHONNODEBUGRANGES",))?
        .extract::<Option<String>>()?
        .is_some_and(|v| !v.is_empty());
    Ok(Fingerprint {
        sys_version: sys.getattr("version")?.extract()?,
        hexversion: sys.getattr("hexversion")?.extract()?,
        magic: magic.iter().map(|b| format!("{b:02x}")).collect(),
        abiflags: sys.getattr("abiflags")?.extract()?,
        cache_tag: sys
            .getattr("implementation")?
            .getattr("cache_tag")?
            .extract::<Option<String>>()?
            .unwrap_or_default(),
        pointer_size: (usize::BITS / 8),
        digit_bits: sys
            .getattr("int_info")?
            .getattr("bits_per_digit")?
            .extract()?,
        byteorder: sys.getattr("byteorder")?.extract()?,
        debug: false,
        trace_refs: false,
        gil_disabled: false,
        no_debug_ranges: xopts.contains("no_debug_ranges")? || env_ndr,
    })
}
