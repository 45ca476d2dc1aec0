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
    // Two edges between the same tasks (same day and -1 day, say) are drawn side by side.
    let mut parallel: std::collections::HashMap<(usize, usize), (usize, usize)> = Default::default();
    for edge in &layout.edges {
        parallel
            .entry((edge.edge.upstream, edge.edge.downstream))
            .or_default()
            .1 += 1;
    }
    for edge in &layout.edges {
        let slot = parallel
            .get_mut(&(edge.edge.upstream, edge.edge.downstream))
            .expect("counted above");
        let shift = (slot.0 as f64 - (slot.1 as f64 - 1.0) / 2.0) * 6.0;
        slot.0 += 1;
        let mut points = edge.points.clone();
        for point in &mut points {
            point.1 += shift;
        }
        draw_edge(&mut svg, edge.edge, &points, &layout.nodes[edge.edge.upstream]);
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
    }
    svg.push_str("</g></g></svg>");
    svg
}

/// A smooth path through the points (horizontal tangents at each one), an arrow at the end,
/// and the day offset written near the downstream end when it is not "same day". A task that
/// waits for its own earlier day gets a small loop above it.
fn draw_edge(svg: &mut String, edge: EdgeIn, points: &[(f64, f64)], upstream: &super::layout::PlacedNode) {
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
    if edge.day_offset != 0 {
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

    #[test]
    fn text_is_escaped() {
        let mut hostile = node("x", "failed");
        hostile.title = "<script>\"".into();
        let svg = draw(&[hostile], &[]);
        assert!(svg.contains("&lt;script&gt;&quot;") && !svg.contains("<script>"));
    }
}
