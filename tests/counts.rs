//! The reference spaces expand to the SSBN counts BBSSP's formula 1 + L·(B−1) gives.

mod common;
use common::*;
use spacetune::ir::{DecisionKind, Origin, Shape};
use spacetune::{compile, Options};

fn expand(file: &str) -> spacetune::ir::Module {
    in_root(|| {
        let c = compile(
            std::path::Path::new(file),
            Options {
                validate: true,
                ..Options::default()
            },
        );
        expect_ok(c, file)
    })
}

#[test]
fn imagenet_spaces_have_the_papers_counts() {
    for (file, count) in [
        ("examples/bbssp_imagenet_mobile.space", 97),
        ("examples/bbssp_imagenet_res.space", 97),
        ("examples/bbssp_imagenet_vgg.space", 145),
        ("examples/bbssp_cifar.space", 81 + 81 + 121),
    ] {
        let m = expand(file);
        assert_eq!(m.networks.len(), count, "{file}");
        let mut ids: Vec<&str> = m.networks.values().map(|n| n.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "{file}: ids are not unique");
        assert!(
            m.networks
                .values()
                .all(|n| n.cost.flops > 0 && n.cost.params > 0),
            "{file}"
        );
    }
}

#[test]
fn ssbns_differ_from_the_base_in_exactly_one_token() {
    let m = expand("examples/bbssp_imagenet_mobile.space");
    let base = &m.networks[spacetune::ir::Handle::new(0)];
    assert_eq!(base.origin, Origin::Base);
    assert_eq!(base.key.split(' ').count(), 12);
    assert!(base.key.split(' ').all(|t| t == "mbconv_k3_e3"));
    for n in m.networks.values().skip(1) {
        let diff = n
            .key
            .split(' ')
            .zip(base.key.split(' '))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 1, "{} vs base", n.key);
        let Origin::Swap { decision, option } = n.origin else {
            panic!("{} is not a swap", n.id)
        };
        assert_eq!(n.id, format!("mobile-{}-{option}", decision.index()));
    }
    // Bigger kernels and expansions cost more: layer 0 with k7 e6 beats k3 e1.
    let flops = |key: &str| {
        m.networks
            .values()
            .find(|n| n.key.starts_with(key))
            .unwrap()
            .cost
            .flops
    };
    assert!(flops("mbconv_k7_e6 ") > flops("mbconv_k3_e1 "));
}

#[test]
fn fbnet_offers_skip_only_where_the_shape_is_kept() {
    let m = expand("examples/fbnet22.space");
    let info = &m.checked[0];
    let lengths: Vec<usize> = info
        .decisions
        .iter()
        .map(|(_, d)| d.options.len())
        .collect();
    assert_eq!(lengths.len(), 22);
    // First layer of each stage that changes channels or strides: 8 options, others 9.
    let eights: Vec<usize> = lengths
        .iter()
        .enumerate()
        .filter(|(_, &n)| n == 8)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(eights, vec![1, 5, 9, 13, 17, 21]);
    assert_eq!(m.networks.len(), 1 + 16 * 8 + 6 * 7);
}

#[test]
fn nb201_edges_are_tied_across_all_cells() {
    let m = expand("examples/nb201.space");
    let info = &m.checked[0];
    assert_eq!(info.decisions.len(), 6);
    assert!(info
        .decisions
        .iter()
        .all(|(_, d)| d.kind == DecisionKind::Named && d.options.len() == 5));
    assert_eq!(m.networks.len(), 25);
    // Setting one edge to `zero` removes its convolution from all 15 cells at once.
    let base = &m.networks[spacetune::ir::Handle::new(0)];
    let zero = m
        .networks
        .values()
        .find(|n| n.key.starts_with("e01=zero "))
        .unwrap();
    let convs = |n: &spacetune::ir::Network| {
        n.graph
            .nodes
            .iter()
            .filter(|(_, x)| x.op.name() == "conv")
            .count()
    };
    assert_eq!(convs(base) - convs(zero), 15);
}

#[test]
fn darts_cells_read_two_inputs_reduce_and_concatenate() {
    use spacetune::ir::{Graph, Prim, Region};
    let m = expand("examples/darts.space");
    let info = &m.checked[0];
    // 14 edges in each of the normal and the reduction genotype, 8 ops on each.
    assert_eq!(info.decisions.len(), 28);
    assert!(info.decisions.iter().all(|(_, d)| d.options.len() == 8));
    assert_eq!(m.networks.len(), 1 + 28 * 7);
    let base = &m.networks[spacetune::ir::Handle::new(0)].graph;
    let in_cell = |g: &Graph, c: u32| -> Vec<usize> {
        (0..g.nodes.len())
            .filter(|&i| g.regions[i] == Region::Cell(c))
            .collect()
    };
    let op = |g: &Graph, i: usize| g.nodes[spacetune::ir::Handle::new(i)].op.clone();
    // Each cell hands on the concatenation of its 4 intermediate nodes: 4C channels, C
    // doubling at the reductions (cells 2 and 5) along with the stride.
    for (c, (channels, side)) in [
        (64, 32),
        (64, 32),
        (128, 16),
        (128, 16),
        (128, 16),
        (256, 8),
        (256, 8),
        (256, 8),
    ]
    .into_iter()
    .enumerate()
    {
        let last = *in_cell(base, c as u32).last().unwrap();
        assert_eq!(op(base, last), Prim::Concat, "cell {c}");
        assert_eq!(base.nodes[spacetune::ir::Handle::new(last)].inputs.len(), 4);
        assert_eq!(
            base.shapes[last],
            Shape::new(channels, side, side),
            "cell {c}"
        );
    }
    // The cell after a reduction cell reduces its older input (factorised: a shifted
    // branch); no other cell of SSBN_0 shifts anything.
    let shifts = |c: u32| {
        in_cell(base, c)
            .into_iter()
            .filter(|&i| op(base, i) == Prim::Shift)
            .count()
    };
    let counts: Vec<usize> = (0..8).map(shifts).collect();
    assert_eq!(counts, [0, 0, 0, 1, 0, 0, 1, 0]);
    // In a reduction cell, exactly the 8 edges out of the 2 inputs stride (a 3x3 separable
    // conv's first depthwise conv each); in a normal cell none does.
    let strided = |c: u32| {
        in_cell(base, c)
            .into_iter()
            .filter(|&i| {
                matches!(
                    op(base, i),
                    Prim::Conv {
                        stride: 2,
                        k: 3,
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(
        (strided(2), strided(5), strided(0), strided(3)),
        (8, 8, 0, 0)
    );
    // A reduction edge set to `skip_connect` is a factorised reduction in both reduction
    // cells; set to `zero` it is a constant once pruned.
    let with = |key: &str| {
        m.networks
            .values()
            .find(|n| n.key.split(' ').any(|t| t == key))
            .unwrap_or_else(|| panic!("no network with {key}"))
    };
    let skip = &with("r02=skip_connect").graph;
    let shifted: Vec<usize> = (0..8)
        .map(|c| {
            in_cell(skip, c)
                .into_iter()
                .filter(|&i| op(skip, i) == Prim::Shift)
                .count()
        })
        .collect();
    assert_eq!(shifted, [0, 0, 1, 1, 0, 1, 1, 0]);
    let zero = with("r02=zero").graph.pruned();
    // Its 3x3 separable conv (8 ops) is gone from both reduction cells.
    let removed = base.pruned().nodes.len() - zero.nodes.len();
    assert!(removed >= 2 * 8 - 1, "{removed} ops removed");
}
