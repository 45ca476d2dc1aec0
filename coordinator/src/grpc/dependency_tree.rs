//! GetDependencies: the tree of a task's upstreams or downstreams.

use std::collections::{BTreeSet, HashSet};

use goflow_proto as pb;

/// The tree of `task`'s upstreams (or downstreams). A task reached again (a diamond) is shown
/// without its subtree the second time, so the answer grows with the DAG, not with its paths.
pub(super) fn dependency_tree(
    dag: &goflow_core::Dag,
    task: &str,
    depth: usize,
    upward: bool,
    edges: &mut BTreeSet<(String, String, i32)>,
) -> pb::DependencyNode {
    fn walk(
        dag: &goflow_core::Dag,
        task: &str,
        offset: i32,
        depth: usize,
        upward: bool,
        expanded: &mut HashSet<String>,
        edges: &mut BTreeSet<(String, String, i32)>,
    ) -> pb::DependencyNode {
        let mut node = pb::DependencyNode {
            task: task.to_string(),
            day_offset: offset,
            children: vec![],
        };
        // Depth reached, a task already expanded, or one waiting on its own earlier days.
        if depth == 0 || !expanded.insert(task.to_string()) {
            return node;
        }
        let next = if upward {
            dag.upstreams(task)
        } else {
            dag.downstreams(task)
        };
        for dep in next {
            let edge = if upward {
                (dep.task.clone(), task.to_string(), dep.day_offset)
            } else {
                (task.to_string(), dep.task.clone(), dep.day_offset)
            };
            edges.insert(edge);
            node.children.push(walk(
                dag,
                &dep.task,
                dep.day_offset,
                depth - 1,
                upward,
                expanded,
                edges,
            ));
        }
        node
    }
    walk(dag, task, 0, depth, upward, &mut HashSet::new(), edges)
}
