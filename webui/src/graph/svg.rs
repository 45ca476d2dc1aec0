//! Draws a laid-out task graph as SVG: every node a link to its instance (or task), coloured by
//! state with the same CSS classes as the badges, edges with their day offsets written on them.
//! The SVG is plain markup, so the graph reads without JavaScript; `goflow.js` adds pan, zoom
//! and search on top.

use std::fmt::Write;

use super::layout::{CHAR_WIDTH, EdgeIn, Layout, NODE_HEIGHT, layout};

/// What the drawing needs to know about one task.
#[derive(Debug, Clone)]
pub struct GraphNode {
    pub id: String,
    /// CSS class suffix: a state name, or `none` for a task without an instance.
    pub state_class: &'static str,
    pub forced: bool,
    pub href: String,
    /// Hover text.
    pub title: String,
    /// Drawn with a thick outline: the task the page is about.
    pub highlighted: bool,
    /// An hourly task: its day's hours, drawn as a strip of cells along the node's foot.
    pub hours: Vec<HourCell>,
}

/// One hour of an hourly task's day in the graph.
#[derive(Debug, Clone)]
pub struct HourCell {
    pub state_class: &'static str,
    pub href: String,
    pub title: String,
}

/// Lays out and draws the graph. `edges` index into `nodes`.
pub fn draw(nodes: &[GraphNode], edges: &[EdgeIn]) -> String {
    let labels: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let placed = layout(&labels, edges);
    render(nodes, &placed)
}

fn render(nodes: &[GraphNode], layout: &Layout) -> String {
    let mut svg = String::with_capacity(256 + nodes.len() * 400 + layout.edges.len() * 160);
    let (w, h) = (layout.width.ceil(), layout.height.ceil());
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="dag" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="task graph"><defs><pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="8" height="8" fill="#006400"/><rect width="4" height="8" fill="#2e8b2e"/></pattern><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8c959f"/></marker></defs><g class="viewport">"##
    );
    svg.push_str(r#"<g class="edges">"#);
    // Two edges between the same tasks (same day and -1 day, say) would lie on top of each
    // other: each is bent away from the others (a curve through a shifted middle point), the
    // same-day one in the middle when there are three.
    let mut parallel: std::collections::HashMap<(usize, usize), Vec<i32>> = Default::default();
    for edge in &layout.edges {
        parallel
            .entry((edge.edge.upstream, edge.edge.downstream))
            .or_default()
            .push(edge.edge.day_offset);
    }
    for offsets in parallel.values_mut() {
        offsets.sort_by_key(|o| std::cmp::Reverse(*o));
    }
    for edge in &layout.edges {
        let offsets = &parallel[&(edge.edge.upstream, edge.edge.downstream)];
        let bulge = if offsets.len() < 2 {
            0.0
        } else {
            let slot = offsets
                .iter()
                .position(|o| *o == edge.edge.day_offset)
                .unwrap_or(0);
            (slot as f64 - (offsets.len() as f64 - 1.0) / 2.0) * PARALLEL_GAP
        };
        let points = bent(&edge.points, bulge);
        draw_edge(
            &mut svg,
            edge.edge,
            &points,
            &layout.nodes[edge.edge.upstream],
            bulge != 0.0,
        );
    }
    svg.push_str("</g><g class=\"nodes\">");
    for (node, placed) in nodes.iter().zip(&layout.nodes) {
        let class = format!(
            "node state-{}{}{}",
            node.state_class,
            if node.forced { " forced" } else { "" },
            if node.highlighted { " focus" } else { "" }
        );
        let _ = write!(
            svg,
            r#"<a href="{href}" class="{class}" data-task="{id}" id="node-{id}"><title>{title}</title><rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{NODE_HEIGHT}" rx="5"/><text x="{tx:.1}" y="{ty:.1}">{id}</text></a>"#,
            href = escape(&node.href),
            id = escape(&node.id),
            title = escape(&node.title),
            x = placed.x,
            y = placed.y,
            width = placed.width,
            tx = placed.x + placed.width / 2.0,
            ty = placed.y + NODE_HEIGHT / 2.0 + 4.0,
        );
        // The hours, each its own link, along the node's foot (not inside its link: links
        // do not nest).
        if !node.hours.is_empty() {
            let cell = (placed.width - 4.0) / node.hours.len() as f64;
            for (i, hour) in node.hours.iter().enumerate() {
                let _ = write!(
                    svg,
                    r#"<a href="{href}" class="hour state-{class}"><title>{title}</title><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="5"/></a>"#,
                    href = escape(&hour.href),
                    class = hour.state_class,
                    title = escape(&hour.title),
                    x = placed.x + 2.0 + i as f64 * cell,
                    y = placed.y + NODE_HEIGHT - 7.0,
                    w = (cell - 0.6).max(0.5),
                );
            }
        }
    }
    svg.push_str("</g></g></svg>");
    svg
}

/// How far apart the middles of two edges between the same tasks are drawn.
const PARALLEL_GAP: f64 = 36.0;

/// The points of an edge bent by `bulge` (vertically): its ends stay on the nodes, its middle
/// moves (a middle point is added to a straight edge).
fn bent(points: &[(f64, f64)], bulge: f64) -> Vec<(f64, f64)> {
    if bulge == 0.0 || points.len() < 2 {
        return points.to_vec();
    }
    let last = points.len() - 1;
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len() + 1);
    for (i, &(x, y)) in points.iter().enumerate() {
        let end = i == 0 || i == last;
        out.push((x, if end { y + bulge * 0.1 } else { y + bulge }));
        if last == 1 && i == 0 {
            let (x1, y1) = points[1];
            out.push(((x + x1) / 2.0, (y + y1) / 2.0 + bulge));
        }
    }
    out
}

/// A smooth path through the points (horizontal tangents at each one), an arrow at the end,
/// and the day offset written near the downstream end when it is not "same day". A task that
/// waits for its own earlier day gets a small loop above it.
/// A bent edge (one of two between the same tasks) has its label at its middle, on the curve
/// it belongs to.
fn draw_edge(
    svg: &mut String,
    edge: EdgeIn,
    points: &[(f64, f64)],
    upstream: &super::layout::PlacedNode,
    bent: bool,
) {
    let offset_class = if edge.day_offset != 0 { " offset" } else { "" };
    if edge.upstream == edge.downstream {
        let (x, y) = (upstream.x + upstream.width / 2.0, upstream.y);
        let _ = write!(
            svg,
            r#"<path class="edge{offset_class}" d="M{:.1},{y:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{y:.1}" marker-end="url(#arrow)"/>"#,
            x + 8.0,
            x + 30.0,
            y - 26.0,
            x - 30.0,
            y - 26.0,
            x - 8.0,
        );
        let _ = write!(
            svg,
            r#"<text class="offset-label" x="{x:.1}" y="{:.1}">{}d</text>"#,
            y - 22.0,
            edge.day_offset
        );
        return;
    }
    let mut d = String::new();
    let _ = write!(d, "M{:.1},{:.1}", points[0].0, points[0].1);
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let bend = ((x1 - x0) / 2.0).abs().max(20.0);
        let _ = write!(
            d,
            " C{:.1},{y0:.1} {:.1},{y1:.1} {x1:.1},{y1:.1}",
            x0 + bend,
            x1 - bend
        );
    }
    let _ = write!(
        svg,
        r#"<path class="edge{offset_class}" d="{d}" marker-end="url(#arrow)" data-up="{}" data-down="{}"/>"#,
        edge.upstream, edge.downstream
    );
    if edge.day_offset != 0 && bent {
        let (x, y) = points[points.len() / 2];
        let label = format!("{}d", edge.day_offset);
        // Inside the bend, next to its own curve, away from the other one.
        let above = if y > points[0].1 { -5.0 } else { 13.0 };
        let _ = write!(
            svg,
            r#"<text class="offset-label" x="{:.1}" y="{:.1}">{label}</text>"#,
            x - label.len() as f64 * CHAR_WIDTH / 2.0,
            y + above
        );
    } else if edge.day_offset != 0 {
        let (x, y) = points[points.len() - 1];
        let label = format!("{}d", edge.day_offset);
        let _ = write!(
            svg,
            r#"<text class="offset-label" x="{:.1}" y="{:.1}">{label}</text>"#,
            x - label.len() as f64 * CHAR_WIDTH * 0.8 - 10.0,
            y - 5.0
        );
    }
}

/// Escapes text for SVG/HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: &'static str) -> GraphNode {
        GraphNode {
            id: id.into(),
            state_class: state,
            forced: false,
            href: format!("/instances/{id}/20260110"),
            title: format!("{id}: {state}"),
            highlighted: false,
            hours: vec![],
        }
    }

    #[test]
    fn nodes_are_links_coloured_by_state_and_named() {
        let svg = draw(
            &[node("extract", "success"), node("load", "none")],
            &[EdgeIn {
                upstream: 0,
                downstream: 1,
                day_offset: 0,
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(
            r#"<a href="/instances/extract/20260110" class="node state-success" data-task="extract""#
        ));
        assert!(svg.contains(">extract</text>") && svg.contains(">load</text>"));
        assert!(svg.contains(r#"class="node state-none""#));
        assert_eq!(svg.matches("class=\"edge\"").count(), 1);
        assert!(!svg.contains("offset-label"));
    }

    #[test]
    fn day_offsets_are_written_on_their_edges() {
        let svg = draw(
            &[node("a", "success"), node("b", "waiting")],
            &[
                EdgeIn {
                    upstream: 0,
                    downstream: 1,
                    day_offset: -1,
                },
                EdgeIn {
                    upstream: 1,
                    downstream: 1,
                    day_offset: -1,
                },
            ],
        );
        assert_eq!(svg.matches(">-1d</text>").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"edge offset\"").count(), 2);
    }

    /// The path's points as numbers: `M1,2 C3,4 5,6 7,8` -> [(1,2), (3,4), (5,6), (7,8)].
    fn path_points(svg: &str, nth: usize) -> Vec<(f64, f64)> {
        let edge = svg.split("<path class=\"edge").nth(nth + 1).unwrap();
        let d = &edge[edge.find(" d=\"").unwrap() + 4..];
        d[..d.find('"').unwrap()]
            .split([' ', 'M', 'C'])
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_same_day_and_a_previous_day_edge_between_two_tasks_are_drawn_apart() {
        let svg = draw(
            &[node("a", "success"), node("b", "waiting")],
            &[
                EdgeIn {
                    upstream: 0,
                    downstream: 1,
                    day_offset: 0,
                },
                EdgeIn {
                    upstream: 0,
                    downstream: 1,
                    day_offset: -1,
                },
            ],
        );
        let (same, previous) = (path_points(&svg, 0), path_points(&svg, 1));
        let middle = |points: &[(f64, f64)]| points[points.len() / 2].1;
        let apart = (middle(&same) - middle(&previous)).abs();
        assert!(apart >= 20.0, "the middles are {apart} apart: {svg}");
        assert_eq!(
            svg.matches(">-1d</text>").count(),
            1,
            "only the -1d edge is labelled"
        );
        let label = &svg[svg.find("class=\"offset-label\"").unwrap()..];
        let y: f64 = label[label.find("y=\"").unwrap() + 3..]
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let (own, other) = (middle(&previous), middle(&same));
        assert!(
            (y - own).abs() < (y - other).abs(),
            "the label sits by its curve: {y}, {own}, {other}"
        );
    }

    #[test]
    fn text_is_escaped() {
        let mut hostile = node("x", "failed");
        hostile.title = "<script>\"".into();
        let svg = draw(&[hostile], &[]);
        assert!(svg.contains("&lt;script&gt;&quot;") && !svg.contains("<script>"));
    }
}
