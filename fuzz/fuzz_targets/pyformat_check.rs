//! The CPython checker and the trusted planner on arbitrary bytes (and on a copy with repaired
//! checksums), for each of the three layouts: parse, verify every span, run
//! `Checker::check_span` and `Planner::plan_span`; neither panics, every plan either returns
//! only names offsets inside the span that refer to what the plan says (the loader writes
//! through them), and on a span the checker accepts the planner computes the same plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pycds_arena::{Archive, SpanId};
use pycds_pyformat::meta::single_dependency;
use pycds_pyformat::{Checker, ExternTable, Planner};

fuzz_target!(|data: &[u8]| {
    for input in pycds_fuzz::variants(data) {
        run(&input);
    }
});

fn run(data: &[u8]) {
    let Ok(a) = Archive::from_bytes(data) else {
        return;
    };
    let Ok(externs) = ExternTable::from_archive(&a) else {
        return;
    };
    let roots =
        pycds_fuzz::span_roots(&a).unwrap_or_else(|| vec![Vec::new(); a.span_count() as usize]);
    let views: Vec<_> = (0..a.span_count())
        .filter_map(|i| a.verify_span(SpanId(i)).ok())
        .collect();
    for v in pycds_fuzz::VERSIONS {
        let mut checker = Checker::new(v.layout());
        let mut planner = Planner::new(v.layout());
        for view in &views {
            let r = &roots[view.id().0 as usize];
            let checked = checker.check_span(view, &externs, r, single_dependency(&a, view.id()));
            let planned = planner.plan_span(view, &externs, r);
            if let Ok(plan) = &planned {
                pycds_fuzz::assert_plan_sound(view, plan, v.layout());
            }
            if let Ok(plan) = checked {
                pycds_fuzz::assert_plan_sound(view, &plan, v.layout());
                assert_eq!(
                    planned.ok(),
                    Some(plan),
                    "planner differs on a checked span"
                );
            }
        }
    }
}
