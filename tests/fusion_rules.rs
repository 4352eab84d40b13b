//! Black-box fusion-rule detection on every backend that can run here: the fusing
//! configuration finds the fusions its compiler is known to do (conv→bn at least), the
//! non-fusing configuration of the same backend finds (nearly) none; constant folding is
//! found where the runtime folds.

mod common;

use spacetune::backends::{
    lookup,
    measure::Protocol,
    store::{Sqlite, Store},
    Options,
};
use spacetune::pass::fusion::{saved_share, PairRule};
use std::process::Command;

/// Detects the rules of `tests/spaces/fusion_probe.space` with `options` in a fresh
/// database and returns the verdicts stored for that configuration.
fn detect(backend: &str, options: &[&str]) -> Vec<PairRule> {
    let rules = detect_on("tests/spaces/fusion_probe.space", backend, options);
    assert!(rules.len() >= 8, "every op pair of the space is tested");
    rules
}

fn detect_on(space: &str, backend: &str, options: &[&str]) -> Vec<PairRule> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    // The sim computes its timings and this file's exec board scripts them; ORT and TVM
    // measure theirs and must not share the cores.
    let _quiet = (!matches!(backend, "sim" | "exec")).then(common::timing);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spacetune"));
    cmd.current_dir(common::root())
        .args(["fusion-rules", space, "--backend", backend])
        .arg("--db")
        .arg(&db);
    for o in options {
        cmd.args(["-o", o]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pairs: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    let b = lookup(backend, &Options::parse(&pairs).unwrap()).unwrap();
    Sqlite::open(&db)
        .unwrap()
        .fusion_pairs(&b.fingerprint().under(&Protocol::default()))
        .unwrap()
}

fn fused(rules: &[PairRule]) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.fused)
        .map(|r| format!("{}->{}", r.a, r.b))
        .collect()
}

/// The fusing configuration finds each of `expect`: fused, or — on a machine too noisy to be
/// sure, where a probe's runs move by more than the saving clears the threshold by — left
/// undecided with its middle runs saving more than the threshold; never short of it. The
/// plain configuration fuses (nearly) nothing and saves less than the threshold on each
/// it probes.
fn check(backend: &str, fusing: &[&str], plain: &[&str], expect: &[&str]) {
    let found = |rules: &[PairRule], e: &str| {
        rules
            .iter()
            .find(|r| format!("{}->{}", r.a, r.b) == e)
            .unwrap_or_else(|| panic!("{backend}: {e} is probed: {rules:?}"))
            .clone()
    };
    let share = |r: &PairRule| saved_share(&r.a, r.t_a, r.t_b, r.t_ab);
    let on = detect(backend, fusing);
    for e in expect {
        let r = found(&on, e);
        assert!(
            r.fused || (r.undecided && share(&r) > 0.5),
            "{backend} {fusing:?}: {e} not detected: {r:?}"
        );
    }
    let off = detect(backend, plain);
    assert!(
        fused(&off).len() <= 1,
        "{backend} {plain:?} does not fuse, yet the test found {:?}",
        fused(&off)
    );
    // A chain after a fused pair (conv+bn -> relu) is probed only where the pair fused.
    for r in off
        .iter()
        .filter(|r| expect.contains(&format!("{}->{}", r.a, r.b).as_str()))
    {
        assert!(
            !r.fused && share(r) < 0.5,
            "{backend} {plain:?} does not fuse {}->{}: {r:?}",
            r.a,
            r.b
        );
    }
}

#[test]
fn sim_rules_follow_its_fusion_policy() {
    // The preset's compiler fuses bn and the activation into the conv and an add into its
    // producer; with fuse=off only on-chip hand-over remains (at most one pair shows it).
    check(
        "sim",
        &["fuse=on"],
        &["fuse=off"],
        &[
            "conv->bn",
            "conv+bn->relu",
            "conv+bn->relu6",
            "conv+bn->add",
        ],
    );
}

#[test]
fn ort_rules_fold_batch_norm_only_when_optimising() {
    check("ort", &["opt=all"], &["opt=disabled"], &["conv->bn"]);
}

/// ORT's graph optimiser folds a batch norm of a constant into a constant (and with it the
/// whole network whose output depends on nothing else); with optimisations off it runs it.
#[test]
fn ort_folds_constants_only_when_optimising() {
    let verdict = |opt: &str| {
        let rules = detect_on("tests/spaces/fold_probe.space", "ort", &[opt]);
        let probe = rules
            .iter()
            .find(|r| r.a == "zero" && r.b == "bn")
            .unwrap_or_else(|| panic!("zero -> bn is probed: {rules:?}"))
            .clone();
        assert!(probe.t_b > 0.0, "bn on a live input takes time: {probe:?}");
        probe
    };
    let on = verdict("opt=all");
    assert!(on.fused, "ORT folds constants: {on:?}");
    let off = verdict("opt=disabled");
    assert!(!off.fused, "ORT without optimisations runs the bn: {off:?}");
}

#[cfg(feature = "tvm")]
#[test]
fn tvm_rules_fuse_only_in_the_fusing_pipeline() {
    check(
        "tvm",
        &["pipeline=fuse"],
        &["pipeline=plain"],
        &["conv->bn"],
    );
}

/// The verdicts of `tests/spaces/fold_probe.space` on a scripted board (the exec backend):
/// `rest` is Python that adjusts `ms`, the latency summed from the network's ops, knowing
/// `text` (the graph's JSON), `op(i)` and `pairs` (every (producer, consumer) op pair).
fn board(rest: &str) -> Vec<PairRule> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("board.py");
    let head = r#"import hashlib, json, os, sys
text = open(sys.argv[1]).read()
nodes = json.loads(text)["nodes"]["items"]
op = lambda i: nodes[i]["op"]["op"]
cost = {"conv": 1.0, "batch_norm": 0.4, "relu": 0.2}
ms = 0.01 + sum(cost.get(op(i), 0.05) for i in range(1, len(nodes)))
pairs = {(op(n["inputs"][0]), op(i)) for i, n in enumerate(nodes) if n["inputs"]}
"#;
    std::fs::write(
        &script,
        format!("{head}{rest}print(json.dumps({{\"latency_ms\": ms}}))\n"),
    )
    .unwrap();
    let command = format!("command=python3 {} \"$2\"", script.display());
    detect_on("tests/spaces/fold_probe.space", "exec", &[&command])
}

fn rule<'r>(rules: &'r [PairRule], a: &str, b: &str) -> &'r PairRule {
    rules
        .iter()
        .find(|r| r.a == a && r.b == b)
        .unwrap_or_else(|| panic!("{a} -> {b} is probed: {rules:?}"))
}

/// A board whose timings of conv→bn are off in one run: the pair is undecided at first
/// (three runs, one off, leave a margin wider than the saving clears the threshold by) and
/// probed again; a second, steady try outvotes the run that was off and halves the margin:
/// fused on the second try. A pair whose runs never agree stays undecided after every try;
/// a pair the runs agree on takes one.
#[test]
fn undecided_pairs_are_probed_again_and_decided_on_every_run_so_far() {
    // A bn reading a conv is nearly free (fused), except in each network's second call (the
    // first try's runs disagree); relu→conv saves in odd calls only (no try's runs agree).
    let rules = board(
        r#"seen = os.path.join(os.path.dirname(sys.argv[0]), "calls-" + hashlib.sha1(text.encode()).hexdigest())
calls = (os.path.getsize(seen) if os.path.exists(seen) else 0) + 1
open(seen, "a").write("x")
if ("conv", "batch_norm") in pairs and calls != 2:
    ms -= 0.35
if ("relu", "conv") in pairs and calls % 2 == 1:
    ms -= 0.18
"#,
    );
    let conv_bn = rule(&rules, "conv", "bn");
    assert!(
        conv_bn.fused && !conv_bn.undecided && conv_bn.attempts == 2,
        "{conv_bn:?}"
    );
    let relu_conv = rule(&rules, "relu", "conv");
    assert!(
        !relu_conv.fused
            && relu_conv.undecided
            && relu_conv.attempts == spacetune::pass::fusion::ATTEMPTS,
        "{relu_conv:?}"
    );
    let settled = rule(&rules, "bn", "relu");
    assert!(
        !settled.fused && !settled.undecided && settled.attempts == 1,
        "{settled:?}"
    );
}

/// A board whose conv→bn saving depends on the process timing it (fused in every other
/// process, as TVM's conv+bn→relu6 came out in some processes and not in others): each run
/// of the fusion test is timed in a process of its own, so the runs of every try disagree
/// and the pair stays undecided. Timed in one process, its runs would all agree (fused on
/// the first try). bn→relu, the same in every process, is decided on the first try.
#[test]
fn a_saving_that_moves_between_processes_is_undecided() {
    // The spacetune process a call is timed for: the nearest spacetune among its ancestors.
    let rules = board(
        r#"pid = os.getppid()
while pid > 1 and open(f"/proc/{pid}/comm").read().strip() != "spacetune":
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
seen = os.path.join(os.path.dirname(sys.argv[0]), "processes")
known = open(seen).read().split() if os.path.exists(seen) else []
if str(pid) not in known:
    known.append(str(pid))
    open(seen, "w").write(" ".join(known))
if ("conv", "batch_norm") in pairs and known.index(str(pid)) % 2 == 0:
    ms -= 0.35
"#,
    );
    assert!(rules.iter().all(|r| r.apart), "{rules:?}");
    let moving = rule(&rules, "conv", "bn");
    assert!(
        !moving.fused && moving.undecided && moving.attempts == spacetune::pass::fusion::ATTEMPTS,
        "{moving:?}"
    );
    let steady = rule(&rules, "bn", "relu");
    assert!(
        !steady.fused && !steady.undecided && steady.attempts == 1,
        "{steady:?}"
    );
}

/// `spacetune fusion-rules FILE` on the sim with `db`: what it printed and its stderr.
fn rules_of(space: &str, db: &std::path::Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .current_dir(common::root())
        .args(["fusion-rules", space, "--backend", "sim", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_file_keeps_its_verdicts_when_another_tests_the_same_pairs_elsewhere() {
    // The Mobile and NB201 spaces meet some op pairs at different places (a depthwise conv
    // before its batch norm in one, a 3x3 conv in the other).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let (mobile, _) = rules_of("examples/bbssp_cifar_mobile.space", &db);
    let (_, tested) = rules_of("examples/nb201.space", &db);
    assert!(
        tested.contains("fusion test:"),
        "NB201 has pairs of its own"
    );
    let all: Vec<PairRule> = Sqlite::open(&db)
        .unwrap()
        .fusion_pairs(
            &lookup("sim", &Options::default())
                .unwrap()
                .fingerprint()
                .under(&Protocol::default()),
        )
        .unwrap();
    let twice = all
        .iter()
        .filter(|r| {
            all.iter()
                .any(|s| s.a == r.a && s.b == r.b && s.place != r.place)
        })
        .count();
    assert!(twice > 0, "no pair stored at two places: {all:?}");
    // Back to Mobile: nothing is tested again, and its rules are what they were.
    let (again, stderr) = rules_of("examples/bbssp_cifar_mobile.space", &db);
    assert!(!stderr.contains("fusion test:"), "tested again: {stderr}");
    assert_eq!(mobile, again);
}
