//! BBSSP's weight transfer (SSBN_0 → SSBN_(i,j)) by place in the IR: every copied tensor
//! comes from the same region, cell edge and op of SSBN_0, exactly the swapped decision's
//! ops start afresh (in every cell, for a tied choice), and the copies are counted.

mod common;

use spacetune::backends::weights::{transfer, Weights};
use spacetune::ir::{Graph, Module, Network, Origin, Region};
use spacetune::pass::profile::fresh;

/// SSBN_0's graph and the swapped network's, pruned as they are trained.
fn pair<'m>(m: &'m Module, id: &str) -> (Graph, Graph, &'m Network) {
    let net = m
        .networks
        .values()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("no {id}"));
    let base = m
        .networks
        .values()
        .find(|n| n.space == net.space && n.origin == Origin::Base)
        .unwrap();
    (base.graph.pruned(), net.graph.pruned(), net)
}

/// The tensors of node `i` of `w`.
fn tensors(w: &Weights, i: usize) -> Vec<(&String, &spacetune::backends::weights::Param)> {
    let prefix = format!("n{i}.");
    w.params
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect()
}

/// NB201 with edge e12 swapped to `option`: returns (copied tensors, tensors of the
/// network, cells with a fresh node).
fn nb201_swap(option: &str) -> (usize, usize, usize) {
    nb201_swap_of("e12", option)
}

fn nb201_swap_of(edge: &str, option: &str) -> (usize, usize, usize) {
    let m = common::module("examples/nb201.space");
    let info = &m.checked[0];
    let (d, decision) = info.decisions.iter().find(|(_, d)| d.name == edge).unwrap();
    let o = decision
        .options
        .iter()
        .position(|a| a.token == option)
        .unwrap();
    let net = m
        .networks
        .values()
        .find(|n| {
            n.origin
                == Origin::Swap {
                    decision: d,
                    option: o as u32,
                }
        })
        .unwrap();
    let (from, to, net) = pair(&m, &net.id.clone());
    let (wf, wt) = (Weights::random(&from, 1), Weights::random(&to, 2));
    let f = fresh(&m, net);
    let (w, done) = transfer(&from, &wf, &to, &wt, &f);
    assert_eq!(done.unmatched, 0);
    // Every copy: same region, same cell edge, same op, same tensor.
    for &(t, s) in &done.copies {
        assert_eq!(to.regions[t], from.regions[s], "n{t} from n{s}");
        assert_eq!(
            to.edge(t),
            from.edge(s),
            "n{t} from n{s}: another edge's weights"
        );
        assert_eq!(
            to.nodes[spacetune::ir::Handle::new(t)].op,
            from.nodes[spacetune::ir::Handle::new(s)].op
        );
        for (k, p) in tensors(&w, t) {
            let suffix = k.split_once('.').unwrap().1;
            assert_eq!(Some(p), wf.get(s, suffix), "{k}");
        }
    }
    // The swapped edge keeps its fresh start in every cell; nothing else does.
    let e12: std::collections::BTreeSet<u32> = match &f {
        spacetune::backends::weights::Fresh::CellEdges(e) => e.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(e12.len(), 1, "{edge} fills one edge of the cell");
    let mut fresh_cells = std::collections::BTreeSet::new();
    for i in 0..to.nodes.len() {
        let swapped = to.edge(i).is_some_and(|e| e12.contains(&e));
        for (k, p) in tensors(&w, i) {
            let copied = done.copies.iter().any(|&(t, _)| t == i);
            if swapped {
                assert!(!copied, "{k}: the swapped edge was copied into");
                assert_eq!(Some(p), wt.params.get(k), "{k}");
                if let Region::Cell(c) = to.regions[i] {
                    fresh_cells.insert(c);
                }
            } else {
                assert!(
                    copied,
                    "{k} (n{i} in {}) was not carried over",
                    to.regions[i]
                );
            }
        }
    }
    (done.tensors, wt.params.len(), fresh_cells.len())
}

#[test]
fn an_nb201_edge_swapped_to_a_conv_is_fresh_in_all_15_cells_and_the_rest_is_copied() {
    let (copied, total, cells) = nb201_swap("relu_conv_bn_k1");
    assert_eq!(cells, 15);
    // relu | conv 1×1 | bn in each of 15 cells: one conv weight, four batch-norm tensors.
    assert_eq!(total - copied, 15 * 5);
}

#[test]
fn an_nb201_edge_swapped_to_zero_shifts_no_other_edges_weights() {
    // The pruned edge has no nodes: every tensor of the network comes from SSBN_0, each
    // from its own edge (position-in-cell matching gave them the next edge's).
    let (copied, total, cells) = nb201_swap("zero");
    assert_eq!(cells, 0);
    assert_eq!(copied, total);
    let (copied, total, _) = nb201_swap("skip");
    assert_eq!(copied, total);
}

#[test]
fn a_swapped_layer_alone_starts_afresh() {
    let m = common::module("examples/bbssp_cifar_mobile.space");
    let (from, to, net) = pair(&m, "mobile-3-8");
    let (wf, wt) = (Weights::random(&from, 1), Weights::random(&to, 2));
    let (w, done) = transfer(&from, &wf, &to, &wt, &fresh(&m, net));
    let mut in_layer = 0;
    for i in 0..to.nodes.len() {
        for (k, p) in tensors(&w, i) {
            if to.regions[i] == Region::Layer(3) {
                in_layer += 1;
                assert_eq!(Some(p), wt.params.get(k), "{k}: layer 3 was copied into");
            } else {
                assert!(
                    done.copies.iter().any(|&(t, _)| t == i),
                    "{k} not carried over"
                );
            }
        }
    }
    assert!(in_layer > 0);
    assert_eq!(done.tensors, wt.params.len() - in_layer);
    assert_eq!(done.unmatched, 0);
}

/// A value choice (a width multiplier) changes shapes, not places: nothing is fresh by
/// place, and the tensors whose shapes changed are counted as unmatched.
#[test]
fn a_width_swap_counts_the_tensors_it_could_not_carry() {
    let m = common::module("tests/in/width_choice.space");
    let info = &m.checked[0];
    let named = info
        .decisions
        .iter()
        .find(|(_, d)| d.kind == spacetune::ir::DecisionKind::Named)
        .unwrap()
        .0;
    let net = m
        .networks
        .values()
        .find(|n| matches!(n.origin, Origin::Swap { decision, .. } if decision == named))
        .unwrap();
    let (from, to, net) = pair(&m, &net.id.clone());
    let (wf, wt) = (Weights::random(&from, 1), Weights::random(&to, 2));
    let (_, done) = transfer(&from, &wf, &to, &wt, &fresh(&m, net));
    assert!(done.unmatched > 0, "{done:?}");
    assert_eq!(done.tensors + done.unmatched, wt.params.len());
}

#[test]
fn edges_reading_a_pruned_node_keep_their_batch_norms_weights() {
    // e01 = zero: node 1 is zeros, so relu and conv on e12 and e13 fold away and their
    // batch norms come first on their edges; each still gets SSBN_0's batch norm of its
    // own edge (numbered by position alone, 120 tensors went unmatched).
    let (copied, total, cells) = nb201_swap_of("e01", "zero");
    assert_eq!(cells, 0);
    assert_eq!(copied, total);
}
