//! The task graph: a layered layout computed in Rust (`layout`) drawn as SVG (`svg`).

pub mod layout;
pub mod svg;

pub use layout::{EdgeIn, neighbourhood};
pub use svg::{GraphNode, HourCell, draw};
