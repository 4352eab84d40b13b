//! Every `tests/fail/*.space` must be rejected with a rendered diagnostic that names the
//! file, line and column; the rendering is snapshotted.

mod common;
use common::*;
use spacetune::{compile, Options};

#[test]
fn every_failing_input_renders_a_located_diagnostic() {
    in_root(|| {
        let files = space_files("tests/fail");
        assert!(files.len() >= 20, "only {} failing inputs", files.len());
        for path in files {
            let rel = rel(&path);
            let compiled = compile(
                &rel,
                Options {
                    validate: true,
                    ..Options::default()
                },
            );
            let diags = match compiled.result {
                Ok(_) => panic!("{} was accepted", rel.display()),
                Err(d) => d,
            };
            let rendered = diags.render(&compiled.sources);
            let location = format!("┌─ {}:", rel.display());
            assert!(
                rendered.contains(&location),
                "{}: no file:line:col in\n{rendered}",
                rel.display()
            );
            assert!(
                rendered.starts_with("error: "),
                "{}: not an error:\n{rendered}",
                rel.display()
            );
            snapshot!(
                format!("fail__{}", stem(&path).trim_start_matches("tests__fail__")),
                rendered
            );
        }
    })
}
