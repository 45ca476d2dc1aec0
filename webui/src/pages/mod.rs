//! One module per page: the page's `#[derive(Template)]` struct next to its handler.

pub mod instance;
pub mod overview;
pub mod tasks;

use goflow_core::EtlDay;

use crate::error::WebError;

/// A data date from a query or path parameter: `yyyymmdd` or `yyyy-mm-dd`.
fn parse_day(name: &'static str, input: &str) -> Result<EtlDay, WebError> {
    EtlDay::parse(input).map_err(|err| WebError::bad_parameter(name, err.to_string()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
