//! One module per page: the page's `#[derive(Template)]` struct next to its handler.

pub mod agents;
pub mod alerts;
pub mod backfills;
pub mod edit;
pub mod eta;
pub mod explain;
pub mod graph;
pub mod grid;
pub mod history;
pub mod instance;
pub mod login;
pub mod logs;
pub mod overview;
pub mod task;
pub mod tasks;
pub mod versions;
pub mod watch;

use goflow_core::EtlDay;
use goflow_proto::ListInstancesRequest;

use crate::AppState;
use crate::error::WebError;

/// A data date from a query or path parameter: `yyyymmdd` or `yyyy-mm-dd`.
fn parse_day(name: &'static str, input: &str) -> Result<EtlDay, WebError> {
    EtlDay::parse(input).map_err(|err| WebError::bad_parameter(name, err.to_string()))
}

/// An optional day parameter: absent or empty is None.
fn optional_day(name: &'static str, input: Option<&str>) -> Result<Option<EtlDay>, WebError> {
    match input.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => parse_day(name, text).map(Some),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The latest data date with any instance (instances are listed newest day first), or
/// yesterday (UTC) on a fresh install: "yesterday" alone is empty after a backfill. Without
/// the total, which would be a count of every instance.
async fn latest_day(app: &AppState) -> Result<EtlDay, WebError> {
    let newest = app
        .client()
        .list_instances(ListInstancesRequest {
            limit: 1,
            skip_total: true,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .instances;
    match newest.first() {
        Some(instance) => parse_day("etl_day", &instance.etl_day),
        None => Ok(EtlDay::from_date(chrono::Utc::now().date_naive()).offset(-1)),
    }
}

/// The day a page asked for, or the latest day with activity.
async fn day_or_latest(app: &AppState, input: Option<&str>) -> Result<EtlDay, WebError> {
    match optional_day("day", input)? {
        Some(day) => Ok(day),
        None => latest_day(app).await,
    }
}
