//! Golden tests: every good input (examples and tests/in) snapshotted after each stage
//! (parse, check, expand), the before/after diff of `expand`, and the DSL round trip.

mod common;
use common::*;
use spacetune::ir::{dsl, Module};
use spacetune::{compile, compile_str, Options};
use std::cell::RefCell;

#[test]
fn every_stage_of_every_good_input() {
    in_root(|| {
        for path in good_inputs() {
            let name = stem(&path);
            let parsed = spacetune::grammar::parse_file(&rel(&path));
            let module = parsed
                .result
                .unwrap_or_else(|d| panic!("{}", d.render(&parsed.sources)));
            snapshot!(format!("{name}@parse"), module.to_string());

            let after: RefCell<Vec<(String, String)>> = RefCell::new(Vec::new());
            let options = Options {
                validate: true,
                on_pass: Some(Box::new(|pass: &str, m: &Module| {
                    after.borrow_mut().push((pass.to_string(), m.to_string()))
                })),
                ..Options::default()
            };
            let compiled = compile(&rel(&path), options);
            if let Err(d) = &compiled.result {
                panic!(
                    "{} does not compile:\n{}",
                    path.display(),
                    d.render(&compiled.sources)
                );
            }
            let after = after.into_inner();
            let (checked, expanded) = (&after[0].1, &after[1].1);
            snapshot!(format!("{name}@check"), checked.as_str());
            snapshot!(format!("{name}@expand"), expanded.as_str());
            snapshot!(
                format!("{name}@expand.diff"),
                spacetune::pass::diff(checked, expanded)
            );
        }
    })
}

#[test]
fn every_good_input_round_trips_through_dsl() {
    in_root(|| {
        for path in good_inputs() {
            let m = expect_ok(
                compile(&rel(&path), Options::default()),
                &path.display().to_string(),
            );
            let printed = dsl::print_module(&m);
            let again = compile_str("printed.space", &printed, None, Options::default());
            let m2 = again
                .result
                .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), d.render(&again.sources)));
            assert_eq!(
                printed,
                dsl::print_module(&m2),
                "{}: print → parse → print changed",
                path.display()
            );
            let keys = |m: &Module| {
                m.networks
                    .values()
                    .map(|n| (n.id.clone(), n.key.clone(), n.cost))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                keys(&m),
                keys(&m2),
                "{}: the reprinted file expands differently",
                path.display()
            );
        }
    })
}

#[test]
fn expanded_networks_print_as_fixed_dsl_that_rebuilds_them() {
    in_root(|| {
        for path in good_inputs() {
            let m = expect_ok(
                compile(&rel(&path), Options::default()),
                &path.display().to_string(),
            );
            // Every SSBN_0 and a spread of the others keeps the test fast.
            for n in m.networks.values().step_by(7) {
                let text = dsl::print_network(&m, n);
                let again = compile_str(
                    "network.space",
                    &text,
                    None,
                    Options {
                        validate: true,
                        ..Options::default()
                    },
                );
                let fixed = again.result.unwrap_or_else(|d| {
                    panic!(
                        "{} {}:\n{}\n{text}",
                        path.display(),
                        n.id,
                        d.render(&again.sources)
                    )
                });
                assert_eq!(fixed.networks.len(), 1, "{} {}", path.display(), n.id);
                let rebuilt = &fixed.networks[spacetune::ir::Handle::new(0)];
                assert_eq!(
                    rebuilt.cost,
                    n.cost,
                    "{} {}: costs differ",
                    path.display(),
                    n.id
                );
                let ops = |g: &spacetune::ir::Graph| {
                    g.nodes
                        .iter()
                        .map(|(_, x)| x.op.clone())
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    ops(&rebuilt.graph),
                    ops(&n.graph),
                    "{} {}: graphs differ",
                    path.display(),
                    n.id
                );
            }
        }
    })
}
