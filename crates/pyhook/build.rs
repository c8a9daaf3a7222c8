//! Compiles `csrc/layout_probe.c` against the headers of the interpreter pyo3 builds for,
//! so that the extension carries the compiler's own view of CPython's struct layouts.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc/layout_probe.c");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let cfg = pyo3_build_config::get();
    let python = cfg
        .executable()
        .map(str::to_owned)
        .or_else(|| std::env::var("PYO3_PYTHON").ok())
        .unwrap_or_else(|| "python3".to_string());
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include'])",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} to find the CPython headers: {e}"));
    assert!(
        out.status.success(),
        "{python} could not report its include directory"
    );
    let include = String::from_utf8(out.stdout).expect("utf-8 include path");
    let include = include.trim();
    let internal = format!("{include}/internal");
    assert!(
        std::path::Path::new(&internal).join("pycore_code.h").exists(),
        "the CPython internal headers are missing from {internal}; pycds needs them to probe object layouts"
    );
    cc::Build::new()
        .file("csrc/layout_probe.c")
        .include(include)
        .include(&internal)
        .warnings(true)
        .flag_if_supported("-Wno-deprecated-declarations")
        .compile("pycds_layout_probe");
}
