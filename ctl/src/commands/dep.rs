//! `goflowctl dep -j TASK [--up|--down] [--depth N] [-o json|dot]`

use std::{collections::HashSet, io::Write};

use clap::{Args, ValueEnum};
use goflow_proto::{DependencyEdge, DependencyNode, GetDependenciesRequest, GetDependenciesResponse};
use serde_json::{Value, json};

use crate::{Client, output};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DepFormat {
    /// Indented trees.
    #[default]
    Tree,
    /// The server's answer as JSON.
    Json,
    /// A Graphviz digraph of the edges.
    Dot,
}

#[derive(Debug, Args)]
pub struct DepArgs {
    /// The task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    /// Only what the task depends on.
    #[arg(long, conflicts_with = "down")]
    pub up: bool,
    /// Only what depends on the task.
    #[arg(long)]
    pub down: bool,
    /// How many levels to follow (0: all).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(i32).range(0..))]
    pub depth: i32,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: DepFormat,
}

pub async fn run(client: &mut Client, args: &DepArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let request = GetDependenciesRequest {
        task: args.task.clone(),
        up: args.up,
        down: args.down,
        depth: args.depth,
    };
    let response = client.get_dependencies(request).await?.into_inner();
    match args.output {
        DepFormat::Tree => {
            out.write_all(render_trees(&args.task, args.up, args.down, &response).as_bytes())?
        }
        DepFormat::Json => output::write_json(out, &to_json(&response))?,
        DepFormat::Dot => out.write_all(render_dot(&args.task, &response.edges).as_bytes())?,
    }
    Ok(())
}

/// The `upstream of X:` and/or `downstream of X:` sections.
pub fn render_trees(task: &str, up_only: bool, down_only: bool, r: &GetDependenciesResponse) -> String {
    let mut text = String::new();
    let sections = [
        ("upstream", &r.upstream, !down_only),
        ("downstream", &r.downstream, !up_only),
    ];
    for (name, node, wanted) in sections {
        if !wanted {
            continue;
        }
        text.push_str(&format!("{name} of {task}:\n"));
        match node {
            Some(node) => render_tree(node, &mut text),
            None => text.push_str(&format!("{task}\n")),
        }
    }
    text
}

/// One tree, drawn with `├──`, `└──` and `│`; non-zero day offsets as `(-1 day)`.
pub fn render_tree(root: &DependencyNode, text: &mut String) {
    text.push_str(&root.task);
    text.push('\n');
    render_children(&root.children, "", text);
}

fn render_children(children: &[DependencyNode], prefix: &str, text: &mut String) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        text.push_str(prefix);
        text.push_str(if last { "└── " } else { "├── " });
        text.push_str(&child.task);
        if child.day_offset != 0 {
            text.push_str(&format!(" ({})", output::day_offset(child.day_offset)));
        }
        text.push('\n');
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        render_children(&child.children, &deeper, text);
    }
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A Graphviz digraph: upstream -> downstream, labelled with the day offset when not 0.
pub fn render_dot(task: &str, edges: &[DependencyEdge]) -> String {
    let mut text = String::from("digraph goflow {\n  rankdir=LR;\n");
    text.push_str(&format!("  {} [style=bold];\n", dot_id(task)));
    let mut seen = HashSet::new();
    for e in edges {
        if !seen.insert((&e.upstream, &e.downstream, e.day_offset)) {
            continue;
        }
        text.push_str(&format!("  {} -> {}", dot_id(&e.upstream), dot_id(&e.downstream)));
        if e.day_offset != 0 {
            text.push_str(&format!(" [label=\"{:+}\"]", e.day_offset));
        }
        text.push_str(";\n");
    }
    text.push_str("}\n");
    text
}

fn node_json(n: &DependencyNode) -> Value {
    json!({
        "task": n.task,
        "day_offset": n.day_offset,
        "children": n.children.iter().map(node_json).collect::<Vec<_>>(),
    })
}

pub fn to_json(r: &GetDependenciesResponse) -> Value {
    json!({
        "upstream": r.upstream.as_ref().map(node_json),
        "downstream": r.downstream.as_ref().map(node_json),
        "edges": r.edges.iter()
            .map(|e| json!({"upstream": e.upstream, "downstream": e.downstream, "day_offset": e.day_offset}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(task: &str, day_offset: i32, children: Vec<DependencyNode>) -> DependencyNode {
        DependencyNode {
            task: task.into(),
            day_offset,
            children,
        }
    }

    fn response() -> GetDependenciesResponse {
        GetDependenciesResponse {
            upstream: Some(node(
                "load_orders",
                0,
                vec![node("extract_orders", 0, vec![node("fetch_raw", -1, vec![])])],
            )),
            downstream: Some(node("load_orders", 0, vec![node("report", 0, vec![])])),
            edges: vec![
                DependencyEdge {
                    upstream: "fetch_raw".into(),
                    downstream: "extract_orders".into(),
                    day_offset: -1,
                },
                DependencyEdge {
                    upstream: "extract_orders".into(),
                    downstream: "load_orders".into(),
                    day_offset: 0,
                },
                DependencyEdge {
                    upstream: "load_orders".into(),
                    downstream: "report".into(),
                    day_offset: 0,
                },
            ],
        }
    }

    #[test]
    fn both_trees() {
        assert_eq!(
            render_trees("load_orders", false, false, &response()),
            "upstream of load_orders:\n\
             load_orders\n\
             └── extract_orders\n\
             \u{20}   └── fetch_raw (-1 day)\n\
             downstream of load_orders:\n\
             load_orders\n\
             └── report\n"
        );
    }

    #[test]
    fn one_direction_and_branches() {
        let r = GetDependenciesResponse {
            upstream: Some(node(
                "x",
                0,
                vec![node("a", 0, vec![node("c", -2, vec![])]), node("b", 0, vec![])],
            )),
            ..Default::default()
        };
        assert_eq!(
            render_trees("x", true, false, &r),
            "upstream of x:\nx\n├── a\n│   └── c (-2 days)\n└── b\n"
        );
        assert_eq!(render_trees("x", false, true, &r), "downstream of x:\nx\n");
    }

    #[test]
    fn dot() {
        let mut edges = response().edges;
        edges.push(edges[0].clone());
        assert_eq!(
            render_dot("load_orders", &edges),
            "digraph goflow {\n  rankdir=LR;\n  \"load_orders\" [style=bold];\n\
             \u{20} \"fetch_raw\" -> \"extract_orders\" [label=\"-1\"];\n\
             \u{20} \"extract_orders\" -> \"load_orders\";\n\
             \u{20} \"load_orders\" -> \"report\";\n}\n"
        );
    }

    #[test]
    fn json() {
        let v = to_json(&response());
        assert_eq!(v["upstream"]["children"][0]["children"][0]["task"], "fetch_raw");
        assert_eq!(v["upstream"]["children"][0]["children"][0]["day_offset"], -1);
        assert_eq!(v["edges"].as_array().unwrap().len(), 3);
        let v = to_json(&GetDependenciesResponse::default());
        assert_eq!(v["downstream"], Value::Null);
    }

    #[test]
    fn parses() {
        let cli = crate::tests::parse(&["dep", "-j", "a"]).unwrap();
        let crate::Command::Dep(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.up, args.down, args.depth, args.output),
            (false, false, 0, DepFormat::Tree)
        );
        assert!(crate::tests::parse(&["dep", "-j", "a", "--up", "--down"]).is_err());
        assert!(crate::tests::parse(&["dep", "-j", "a", "-o", "json"]).is_ok());
        assert!(crate::tests::parse(&["dep", "-j", "a", "--depth", "-1"]).is_err());
    }
}
