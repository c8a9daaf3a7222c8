//! Keeps `spec/format.md` and the implementation in sync: every requirement id of the validation
//! algorithm appears in the spec, in the same order, and the spec's version line matches.

use pycds_arena::{FORMAT_MAJOR, FORMAT_MINOR, REQUIREMENTS};

fn spec(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn requirement_ids_appear_in_spec_in_order() {
    let text = spec("format.md");
    let section = &text[text.find("## 7. Validation").expect("validation chapter")..];
    let mut last = 0;
    for (id, _) in REQUIREMENTS {
        let needle = format!("**{id}**");
        let pos = section
            .find(&needle)
            .unwrap_or_else(|| panic!("{id} missing from spec/format.md section 7"));
        assert!(pos > last || last == 0, "{id} out of order in the spec");
        last = pos;
    }
}

#[test]
fn version_line_matches() {
    let line = format!("Format version: {FORMAT_MAJOR}.{FORMAT_MINOR}");
    for f in ["README.md", "versioning.md", "security.md"] {
        assert!(spec(f).contains(&line), "{f} lacks `{line}`");
    }
    assert!(spec("format.md").contains(&format!("version {FORMAT_MAJOR}.{FORMAT_MINOR}")));
}
