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
    // Section 7 defines each requirement once, as a numbered step `N. **ARENA-XXX-NNN** ...`;
    // the steps are numbered 1, 2, 3, ... and define exactly the ids of `REQUIREMENTS`, in the
    // same order. (Ids are stable: a rule added later gets a new id at its place in the order,
    // e.g. ARENA-TAB-010 right after ARENA-TAB-005, ARENA-SEC-008 last.)
    let text = spec("format.md");
    let start = text.find("## 7. Validation").expect("validation chapter");
    let end = text[start..]
        .find("\n## 8.")
        .map_or(text.len(), |e| start + e);
    let section = &text[start..end];
    let steps: Vec<(usize, &str)> = section
        .lines()
        .filter_map(|line| {
            let (num, rest) = line.split_once(". **")?;
            let num: usize = num.trim().parse().ok()?;
            let id = rest.split_once("**")?.0;
            id.starts_with("ARENA-").then_some((num, id))
        })
        .collect();
    let ids: Vec<&str> = steps.iter().map(|&(_, id)| id).collect();
    let want: Vec<&str> = REQUIREMENTS.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, want, "section 7 steps vs REQUIREMENTS");
    for (i, &(num, id)) in steps.iter().enumerate() {
        assert_eq!(num, i + 1, "{id} is step {num}, expected step {}", i + 1);
    }
    // Every bold id in section 7 is a step (so no requirement is defined twice).
    assert_eq!(section.matches("**ARENA-").count(), want.len());
    // Ids are unique.
    let mut sorted = want.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), want.len(), "duplicate requirement ids");
}

#[test]
fn version_line_matches() {
    let line = format!("Format version: {FORMAT_MAJOR}.{FORMAT_MINOR}");
    for f in ["README.md", "versioning.md", "security.md"] {
        assert!(spec(f).contains(&line), "{f} lacks `{line}`");
    }
    assert!(spec("format.md").contains(&format!("version {FORMAT_MAJOR}.{FORMAT_MINOR}")));
}
