//! A layered ("Sugiyama-style") layout of a task graph, flowing left to right: longest-path
//! layers, dummy nodes on edges that span layers (they become the edge's bends), barycenter
//! ordering sweeps, then vertical placement that pulls each node toward its neighbours without
//! overlaps. Small and fast on purpose: STACK.md measured this shape at about 3.5 ms for 1,000
//! nodes, where the layout crates took seconds or did not finish.

use std::collections::HashMap;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

/// Drawing sizes, in SVG pixels.
pub const NODE_HEIGHT: f64 = 26.0;
pub const CHAR_WIDTH: f64 = 7.2; // 12 px monospace
const NODE_PADDING: f64 = 20.0;
const LAYER_GAP: f64 = 70.0;
const ROW_GAP: f64 = 12.0;
const DUMMY_HEIGHT: f64 = 4.0;
pub const MARGIN: f64 = 20.0;
/// Ordering sweeps and placement rounds: enough to settle pipeline-like DAGs, bounded for speed.
const ORDER_SWEEPS: usize = 8;
const PLACE_ROUNDS: usize = 6;

/// An edge between two tasks (indices into the node list) with its dependency day offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeIn {
    pub upstream: usize,
    pub downstream: usize,
    pub day_offset: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlacedNode {
    /// Top-left corner.
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub layer: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlacedEdge {
    pub edge: EdgeIn,
    /// From the upstream's right side through the bends to the downstream's left side.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub nodes: Vec<PlacedNode>,
    pub edges: Vec<PlacedEdge>,
    pub width: f64,
    pub height: f64,
}

/// One slot in a layer: a real node or a bend of a long edge.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Node(usize),
    Bend,
}

/// Lays out `labels.len()` nodes (each as wide as its label) and `edges`.
pub fn layout(labels: &[&str], edges: &[EdgeIn]) -> Layout {
    let widths: Vec<f64> = labels
        .iter()
        .map(|l| l.chars().count() as f64 * CHAR_WIDTH + NODE_PADDING)
        .collect();
    let layer_of = assign_layers(labels.len(), edges);
    let layer_count = layer_of.iter().copied().max().map_or(0, |m| m + 1);

    // Slots per layer, and for each edge the chain of slots it passes through.
    let mut slots: Vec<Slot> = (0..labels.len()).map(Slot::Node).collect();
    let mut slot_layer: Vec<usize> = layer_of.clone();
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    for edge in edges {
        let (from, to) = (layer_of[edge.upstream], layer_of[edge.downstream]);
        let mut chain = vec![edge.upstream];
        // Only forward edges get bends; edges against the flow (possible when day offsets make
        // a task graph cyclic) are drawn directly.
        if to > from + 1 {
            for layer in from + 1..to {
                chain.push(slots.len());
                slots.push(Slot::Bend);
                slot_layer.push(layer);
            }
        }
        chain.push(edge.downstream);
        chains.push(chain);
    }
    let mut layers: Vec<Vec<usize>> = vec![vec![]; layer_count];
    for (slot, layer) in slot_layer.iter().enumerate() {
        layers[*layer].push(slot);
    }
    // Neighbours of each slot in the previous and the next layer, along the chains.
    let mut before: Vec<Vec<usize>> = vec![vec![]; slots.len()];
    let mut after: Vec<Vec<usize>> = vec![vec![]; slots.len()];
    for chain in &chains {
        for pair in chain.windows(2) {
            if slot_layer[pair[1]] == slot_layer[pair[0]] + 1 {
                after[pair[0]].push(pair[1]);
                before[pair[1]].push(pair[0]);
            }
        }
    }

    order_layers(&mut layers, &before, &after);

    let height_of = |slot: usize| match slots[slot] {
        Slot::Node(_) => NODE_HEIGHT,
        Slot::Bend => DUMMY_HEIGHT,
    };
    let centres = place_vertically(&layers, &before, &after, height_of);

    // Columns as wide as their widest node.
    let mut column_x = Vec::with_capacity(layer_count);
    let mut column_width = Vec::with_capacity(layer_count);
    let mut x = MARGIN;
    for layer in &layers {
        let width = layer
            .iter()
            .filter_map(|s| match slots[*s] {
                Slot::Node(n) => Some(widths[n]),
                Slot::Bend => None,
            })
            .fold(0.0_f64, f64::max)
            .max(20.0);
        column_x.push(x);
        column_width.push(width);
        x += width + LAYER_GAP;
    }
    let width = if layer_count == 0 {
        2.0 * MARGIN
    } else {
        x - LAYER_GAP + MARGIN
    };
    let height = centres
        .iter()
        .zip(0..)
        .map(|(c, slot)| c + height_of(slot) / 2.0)
        .fold(0.0_f64, f64::max)
        + MARGIN;

    let nodes: Vec<PlacedNode> = (0..labels.len())
        .map(|n| {
            let layer = layer_of[n];
            PlacedNode {
                // Centred in its column, so edges between columns have room on both sides.
                x: column_x[layer] + (column_width[layer] - widths[n]) / 2.0,
                y: centres[n] - NODE_HEIGHT / 2.0,
                width: widths[n],
                layer,
            }
        })
        .collect();
    let edges = edges
        .iter()
        .zip(&chains)
        .map(|(edge, chain)| {
            let source = &nodes[edge.upstream];
            let target = &nodes[edge.downstream];
            let mut points = vec![(source.x + source.width, centres[edge.upstream])];
            for slot in &chain[1..chain.len() - 1] {
                let layer = slot_layer[*slot];
                points.push((column_x[layer] + column_width[layer] / 2.0, centres[*slot]));
            }
            points.push((target.x, centres[edge.downstream]));
            PlacedEdge { edge: *edge, points }
        })
        .collect();
    Layout {
        nodes,
        edges,
        width,
        height: height.max(2.0 * MARGIN),
    }
}

/// Longest-path layers over the edges that keep the graph acyclic: every edge when it is a DAG;
/// otherwise only same-day edges (a task graph is acyclic on those; day offsets may close
/// loops, such as a task that waits for its own yesterday). Sources are then pulled right, next
/// to their first consumer, so an extract feeding a late join does not stretch across the page.
fn assign_layers(count: usize, edges: &[EdgeIn]) -> Vec<usize> {
    let build = |keep: &dyn Fn(&EdgeIn) -> bool| {
        let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(count, edges.len());
        for _ in 0..count {
            graph.add_node(());
        }
        for e in edges.iter().filter(|e| e.upstream != e.downstream && keep(e)) {
            graph.add_edge(NodeIndex::new(e.upstream), NodeIndex::new(e.downstream), ());
        }
        graph
    };
    let mut graph = build(&|_| true);
    let order = match toposort(&graph, None) {
        Ok(order) => order,
        Err(_) => {
            graph = build(&|e| e.day_offset == 0);
            // Same-day edges are acyclic by definition (goflow rejects such cycles); should
            // that ever break, place everything in one layer rather than fail the page.
            toposort(&graph, None).unwrap_or_else(|_| graph.node_indices().collect())
        }
    };
    let mut layer = vec![0usize; count];
    for node in &order {
        for pred in graph.neighbors_directed(*node, petgraph::Direction::Incoming) {
            layer[node.index()] = layer[node.index()].max(layer[pred.index()] + 1);
        }
    }
    for node in order.iter().rev() {
        let has_preds = graph
            .neighbors_directed(*node, petgraph::Direction::Incoming)
            .next()
            .is_some();
        let first_consumer = graph
            .neighbors_directed(*node, petgraph::Direction::Outgoing)
            .map(|s| layer[s.index()])
            .min();
        if !has_preds && let Some(consumer) = first_consumer {
            layer[node.index()] = consumer.saturating_sub(1);
        }
    }
    layer
}

/// Barycenter sweeps: down (by the previous layer), then up (by the next layer). Keeps the
/// ordering with the fewest crossings seen, counted cheaply between adjacent layers.
fn order_layers(layers: &mut [Vec<usize>], before: &[Vec<usize>], after: &[Vec<usize>]) {
    let slot_count = before.len();
    let mut position = vec![0usize; slot_count];
    let index_positions = |layers: &[Vec<usize>], position: &mut Vec<usize>| {
        for layer in layers {
            for (i, slot) in layer.iter().enumerate() {
                position[*slot] = i;
            }
        }
    };
    index_positions(layers, &mut position);
    let mut best = layers.to_vec();
    let mut best_crossings = crossings(layers, after, &position);
    for sweep in 0..ORDER_SWEEPS {
        let downward = sweep % 2 == 0;
        let indices: Vec<usize> = if downward {
            (1..layers.len()).collect()
        } else {
            (0..layers.len().saturating_sub(1)).rev().collect()
        };
        for l in indices {
            let neighbours = if downward { before } else { after };
            let mut keyed: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|slot| {
                    let ns = &neighbours[*slot];
                    let key = if ns.is_empty() {
                        position[*slot] as f64
                    } else {
                        ns.iter().map(|n| position[*n] as f64).sum::<f64>() / ns.len() as f64
                    };
                    (key, *slot)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            layers[l] = keyed.into_iter().map(|(_, slot)| slot).collect();
            for (i, slot) in layers[l].iter().enumerate() {
                position[*slot] = i;
            }
        }
        let now = crossings(layers, after, &position);
        if now < best_crossings {
            best_crossings = now;
            best = layers.to_vec();
        }
    }
    layers.clone_from_slice(&best);
}

/// Edge crossings between adjacent layers (pairs of edges whose ends swap order).
fn crossings(layers: &[Vec<usize>], after: &[Vec<usize>], position: &[usize]) -> usize {
    let mut total = 0;
    for layer in layers {
        let mut ends: Vec<(usize, usize)> = vec![];
        for slot in layer {
            for next in &after[*slot] {
                ends.push((position[*slot], position[*next]));
            }
        }
        ends.sort_unstable();
        // Quadratic per layer pair, but only on the edges between two layers; cheap enough
        // at the sizes drawn (and only used to pick among a few sweeps).
        if ends.len() > 1000 {
            continue;
        }
        for i in 0..ends.len() {
            for j in i + 1..ends.len() {
                if ends[i].0 < ends[j].0 && ends[i].1 > ends[j].1 {
                    total += 1;
                }
            }
        }
    }
    total
}

/// Vertical centres: start stacked in order, then pull each slot toward the mean of its
/// neighbours (alternating directions) while keeping order and spacing within its layer.
fn place_vertically(
    layers: &[Vec<usize>],
    before: &[Vec<usize>],
    after: &[Vec<usize>],
    height_of: impl Fn(usize) -> f64,
) -> Vec<f64> {
    let slot_count = before.len();
    let mut centre = vec![0.0; slot_count];
    for layer in layers {
        let mut y = MARGIN;
        for slot in layer {
            centre[*slot] = y + height_of(*slot) / 2.0;
            y += height_of(*slot) + ROW_GAP;
        }
    }
    for round in 0..PLACE_ROUNDS {
        let downward = round % 2 == 0;
        let order: Vec<usize> = if downward {
            (0..layers.len()).collect()
        } else {
            (0..layers.len()).rev().collect()
        };
        for l in order {
            let layer = &layers[l];
            let wanted: Vec<f64> = layer
                .iter()
                .map(|slot| {
                    let ns: Vec<usize> = if downward {
                        before[*slot].clone()
                    } else {
                        after[*slot].clone()
                    };
                    if ns.is_empty() {
                        centre[*slot]
                    } else {
                        ns.iter().map(|n| centre[*n]).sum::<f64>() / ns.len() as f64
                    }
                })
                .collect();
            let gap = |i: usize| (height_of(layer[i - 1]) + height_of(layer[i])) / 2.0 + ROW_GAP;
            // Push down from the top, push up from the bottom, and take the mean: a node keeps
            // its wish when it has room, and crowds share the displacement.
            let mut down = wanted.clone();
            for i in 1..layer.len() {
                down[i] = down[i].max(down[i - 1] + gap(i));
            }
            let mut up = wanted.clone();
            for i in (0..layer.len().saturating_sub(1)).rev() {
                up[i] = up[i].min(up[i + 1] - gap(i + 1));
            }
            let mut placed: Vec<f64> = down.iter().zip(&up).map(|(d, u)| (d + u) / 2.0).collect();
            for i in 1..layer.len() {
                placed[i] = placed[i].max(placed[i - 1] + gap(i));
            }
            for (slot, y) in layer.iter().zip(placed) {
                centre[*slot] = y;
            }
        }
    }
    // Shift everything so the topmost slot starts at the margin.
    let top = (0..slot_count)
        .map(|s| centre[s] - height_of(s) / 2.0)
        .fold(f64::INFINITY, f64::min);
    if top.is_finite() {
        for c in &mut centre {
            *c += MARGIN - top;
        }
    }
    centre
}

/// Indices of the tasks within `hops` dependency steps of `focus`, upstream and downstream
/// (not sideways: a sibling is not a neighbour), `focus` included.
pub fn neighbourhood(count: usize, edges: &[EdgeIn], focus: usize, hops: usize) -> Vec<usize> {
    let mut ups: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut downs: HashMap<usize, Vec<usize>> = HashMap::new();
    for e in edges {
        ups.entry(e.downstream).or_default().push(e.upstream);
        downs.entry(e.upstream).or_default().push(e.downstream);
    }
    let mut keep = vec![false; count];
    keep[focus] = true;
    for links in [&ups, &downs] {
        let mut frontier = vec![focus];
        for _ in 0..hops {
            let mut next = vec![];
            for node in frontier {
                for n in links.get(&node).into_iter().flatten() {
                    if !keep[*n] {
                        keep[*n] = true;
                    }
                    next.push(*n);
                }
            }
            next.sort_unstable();
            next.dedup();
            frontier = next;
        }
    }
    (0..count).filter(|n| keep[*n]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(upstream: usize, downstream: usize) -> EdgeIn {
        EdgeIn {
            upstream,
            downstream,
            day_offset: 0,
        }
    }

    fn overlaps(a: &PlacedNode, b: &PlacedNode) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + NODE_HEIGHT && b.y < a.y + NODE_HEIGHT
    }

    /// `layers` chains of `width` nodes, each wired to two nodes of the previous layer.
    fn pipeline(layers: usize, width: usize) -> (Vec<String>, Vec<EdgeIn>) {
        let labels = (0..layers * width).map(|i| format!("task_{i:04}")).collect();
        let mut edges = vec![];
        for l in 1..layers {
            for i in 0..width {
                let node = l * width + i;
                edges.push(edge((l - 1) * width + i, node));
                edges.push(edge((l - 1) * width + (i * 7 + 3) % width, node));
            }
        }
        edges.dedup();
        (labels, edges)
    }

    #[test]
    fn upstreams_are_left_of_downstreams_and_nothing_overlaps() {
        let (labels, edges) = pipeline(6, 20);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let layout = layout(&labels, &edges);
        for e in &edges {
            let (up, down) = (&layout.nodes[e.upstream], &layout.nodes[e.downstream]);
            assert!(up.layer < down.layer);
            assert!(up.x + up.width < down.x);
        }
        for (i, a) in layout.nodes.iter().enumerate() {
            for b in &layout.nodes[i + 1..] {
                assert!(!overlaps(a, b), "{a:?} overlaps {b:?}");
            }
            assert!(a.x >= 0.0 && a.y >= 0.0);
            assert!(a.x + a.width <= layout.width && a.y + NODE_HEIGHT <= layout.height);
        }
    }

    #[test]
    fn long_edges_bend_through_the_layers_they_cross() {
        // a -> b -> c -> d and a -> d: the long edge gets one bend per skipped layer.
        let layout = layout(
            &["a", "b", "c", "d"],
            &[edge(0, 1), edge(1, 2), edge(2, 3), edge(0, 3)],
        );
        let long = &layout.edges[3];
        assert_eq!(long.points.len(), 4, "{:?}", long.points);
        assert!(long.points.windows(2).all(|p| p[0].0 < p[1].0), "left to right");
        assert_eq!(layout.edges[0].points.len(), 2);
    }

    #[test]
    fn a_source_sits_next_to_its_first_consumer() {
        // extract -> clean -> join <- users: users belongs in clean's layer, not in extract's.
        let layout = layout(
            &["extract", "clean", "join", "users"],
            &[edge(0, 1), edge(1, 2), edge(3, 2)],
        );
        assert_eq!(layout.nodes[3].layer, 1);
        assert_eq!(layout.nodes[2].layer, 2);
    }

    #[test]
    fn ordering_removes_avoidable_crossings() {
        // Two independent chains given in crossed order: a0->b1, a1->b0.
        let layout = layout(&["a0", "a1", "b0", "b1"], &[edge(0, 3), edge(1, 2)]);
        let (a0, a1) = (layout.nodes[0].y, layout.nodes[1].y);
        let (b0, b1) = (layout.nodes[2].y, layout.nodes[3].y);
        assert_eq!(a0 < a1, b1 < b0, "the edges do not cross");
    }

    #[test]
    fn day_offset_loops_do_not_break_layering() {
        // a waits for its own yesterday and for b's yesterday, and b needs today's a.
        let edges = [
            edge(0, 1),
            EdgeIn {
                upstream: 0,
                downstream: 0,
                day_offset: -1,
            },
            EdgeIn {
                upstream: 1,
                downstream: 0,
                day_offset: -1,
            },
        ];
        let layout = layout(&["a", "b"], &edges);
        assert!(layout.nodes[0].layer < layout.nodes[1].layer);
        assert_eq!(layout.edges.len(), 3);
    }

    #[test]
    fn a_thousand_tasks_are_laid_out() {
        let (labels, edges) = pipeline(25, 40);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let layout = layout(&labels, &edges);
        assert_eq!(layout.nodes.len(), 1000);
        assert_eq!(layout.nodes.iter().map(|n| n.layer).max(), Some(24));
    }

    #[test]
    fn an_empty_graph_has_a_small_canvas() {
        let layout = layout(&[], &[]);
        assert!(layout.nodes.is_empty() && layout.width > 0.0 && layout.height > 0.0);
    }

    #[test]
    fn neighbourhoods_follow_edges_up_and_down_not_sideways() {
        // 0 -> 1 -> 2 -> 3, and 4 -> 2 (a sibling branch of 1).
        let edges = [edge(0, 1), edge(1, 2), edge(2, 3), edge(4, 2)];
        assert_eq!(neighbourhood(5, &edges, 1, 1), vec![0, 1, 2]);
        assert_eq!(neighbourhood(5, &edges, 1, 2), vec![0, 1, 2, 3]);
        assert_eq!(neighbourhood(5, &edges, 2, 1), vec![1, 2, 3, 4]);
    }
}
