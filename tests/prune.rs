//! The pruned graph every backend runs: `zero` edges are constants, their inputs and what
//! only they read are gone, additions lose zero terms, `skip` nodes are bypassed.

mod common;

use common::module;
use spacetune::ir::{Graph, Handle, Prim};

fn count(g: &Graph, f: impl Fn(&Prim) -> bool) -> usize {
    g.nodes.iter().filter(|(_, n)| f(&n.op)).count()
}

#[test]
fn none_edges_drop_their_subgraphs() {
    let m = module("examples/nb201.space");
    let base = m.network("nb201-0").unwrap();
    let zero = m.network("nb201-0-0").unwrap(); // e01 = zero in every cell
    let (b, z) = (base.graph.pruned(), zero.graph.pruned());
    // Node 1 of every cell is zero, so its conv and the convs of the edges that read it
    // (e12, e13) compute nothing: 3 convs in each of the 15 cells. The batch norms of e12 and
    // e13 stay (they shift a zero input to a constant).
    let convs = |g: &Graph| count(g, |op| matches!(op, Prim::Conv { .. }));
    assert_eq!(convs(&b), convs(&base.graph));
    assert_eq!(convs(&b) - convs(&z), 15 * 3);
    for (_, n) in z.nodes.iter() {
        if matches!(n.op, Prim::Conv { .. } | Prim::Relu | Prim::Add) {
            for x in &n.inputs {
                assert_ne!(z.nodes[*x].op, Prim::Zero, "{} reads a constant zero", n.op);
            }
        }
    }
    assert_eq!(
        count(&z, |op| *op == Prim::Identity),
        0,
        "skips are bypassed"
    );
    assert_eq!(z.shapes.last(), zero.graph.shapes.last());
    for (h, n) in z.nodes.iter() {
        for x in &n.inputs {
            assert!(x.index() < h.index(), "topological order");
        }
    }
}

#[test]
fn an_all_none_cell_leaves_a_constant_where_a_concat_needs_it() {
    let mut g = Graph::with_input(spacetune::ir::Shape::new(4, 8, 8));
    let r = spacetune::ir::Region::Layer(0);
    let x = Handle::new(0);
    let relu = g.push(Prim::Relu, &[x], r).unwrap();
    let z = g.push(Prim::Zero, &[relu], r).unwrap();
    let sum = g.push(Prim::Add, &[z, z], r).unwrap(); // all terms zero: itself a zero
    let cat = g.push(Prim::Concat, &[sum, x], r).unwrap();
    g.push(Prim::Identity, &[cat], r).unwrap();
    let p = g.pruned();
    let ops: Vec<&str> = p.nodes.iter().map(|(_, n)| n.op.name()).collect();
    assert_eq!(ops, ["input", "zero", "concat"], "{p}");
    assert!(
        p.nodes[Handle::new(1)].inputs.is_empty(),
        "the zero is a constant"
    );
    assert_eq!(p.shapes[2], spacetune::ir::Shape::new(8, 8, 8));
}
