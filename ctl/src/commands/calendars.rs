//! `goflowctl calendars [-o json]`: the business calendars; `goflowctl calendars show ID
//! [--year YYYY] [-o json]`: one calendar's year, day by day, in and out.

use std::io::Write;

use clap::{Args, Subcommand};
use goflow_proto::{Calendar, CalendarDetail, GetCalendarRequest, ListCalendarsRequest};
use serde_json::{Value, json};

use crate::{
    Client,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct CalendarsArgs {
    #[command(subcommand)]
    pub command: Option<CalendarsCommand>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum CalendarsCommand {
    /// Every day of a year: in the calendar or not, and why.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The calendar's id.
    pub id: String,
    /// The year to show; default: this year.
    #[arg(long)]
    pub year: Option<i32>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &CalendarsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    match &args.command {
        None => {
            let calendars = client
                .list_calendars(ListCalendarsRequest {})
                .await?
                .into_inner()
                .calendars;
            match args.output {
                Format::Json => output::write_json_array(out, calendars.iter().map(to_json).collect())?,
                Format::Table if calendars.is_empty() => {
                    writeln!(out, "no calendars (define them under calendars: in a DAG file)")?
                }
                Format::Table => out.write_all(render_table(&calendars).as_bytes())?,
            }
        }
        Some(CalendarsCommand::Show(show)) => {
            let detail = client
                .get_calendar(GetCalendarRequest {
                    id: show.id.clone(),
                    year: show.year.unwrap_or(0),
                })
                .await?
                .into_inner();
            match show.output {
                Format::Json => output::write_json(out, &detail_json(&detail))?,
                Format::Table => out.write_all(render_year(&detail).as_bytes())?,
            }
        }
    }
    Ok(())
}

fn to_json(c: &Calendar) -> Value {
    json!({
        "id": c.id,
        "weekdays": c.weekdays,
        "exclude": c.exclude,
        "include": c.include,
        "description": c.description,
        "tasks": c.tasks,
    })
}

fn detail_json(d: &CalendarDetail) -> Value {
    let days: Vec<Value> = d
        .days
        .iter()
        .map(|day| json!({"day": day.day, "in": day.in_calendar, "why": day.why}))
        .collect();
    json!({
        "calendar": d.calendar.as_ref().map(to_json),
        "year": d.year,
        "days_in": d.days.iter().filter(|day| day.in_calendar).count(),
        "days": days,
    })
}

pub fn render_table(calendars: &[Calendar]) -> String {
    let rows = calendars
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.weekdays.join(","),
                c.exclude.len().to_string(),
                c.include.len().to_string(),
                c.tasks.join(", "),
            ]
        })
        .collect();
    output::table(["ID", "WEEKDAYS", "HOLIDAYS", "MAKE-UP DAYS", "TASKS"], rows)
}

/// A month a line: each day's number, in brackets when out of the calendar; then the
/// holidays and make-up days, and the count.
pub fn render_year(d: &CalendarDetail) -> String {
    let id = d.calendar.as_ref().map(|c| c.id.as_str()).unwrap_or("?");
    let total_in = d.days.iter().filter(|day| day.in_calendar).count();
    let mut text = format!(
        "{id} in {}: {total_in} of {} days (days in brackets are out)\n",
        d.year,
        d.days.len()
    );
    for month in 1..=12 {
        let prefix = format!("{}{month:02}", d.year);
        let days: Vec<String> = d
            .days
            .iter()
            .filter(|day| day.day.starts_with(&prefix))
            .map(|day| {
                let number = &day.day[6..];
                match (day.in_calendar, day.why.as_str()) {
                    (true, "included") => format!("{number}+"),
                    (true, _) => format!("{number} "),
                    (false, "excluded") => format!("[{number}]!"),
                    (false, _) => format!("[{number}]"),
                }
            })
            .collect();
        text.push_str(&format!("{}-{month:02}  {}\n", d.year, days.join(" ")));
    }
    let list = |why: &str| -> Vec<&str> {
        d.days
            .iter()
            .filter(|day| day.why == why)
            .map(|day| day.day.as_str())
            .collect()
    };
    let (holidays, make_up) = (list("excluded"), list("included"));
    text.push_str(&format!(
        "holidays (!): {}\nmake-up workdays (+): {}\n",
        if holidays.is_empty() {
            "none".into()
        } else {
            holidays.join(" ")
        },
        if make_up.is_empty() {
            "none".into()
        } else {
            make_up.join(" ")
        },
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use goflow_proto::CalendarDay;

    #[test]
    fn a_year_marks_days_out_holidays_and_make_up_days() {
        let day = |d: &str, in_calendar: bool, why: &str| CalendarDay {
            day: d.into(),
            in_calendar,
            why: why.into(),
        };
        let detail = CalendarDetail {
            calendar: Some(Calendar {
                id: "cn_workday".into(),
                ..Default::default()
            }),
            year: 2026,
            days: vec![
                day("20261001", false, "excluded"),
                day("20261003", false, "off"),
                day("20261008", true, "weekday"),
                day("20261010", true, "included"),
            ],
        };
        let text = render_year(&detail);
        assert!(text.starts_with("cn_workday in 2026: 2 of 4 days"), "{text}");
        assert!(text.contains("2026-10  [01]! [03] 08  10+"), "{text}");
        assert!(
            text.contains("holidays (!): 20261001\nmake-up workdays (+): 20261010\n"),
            "{text}"
        );
        let json = detail_json(&detail);
        assert_eq!(json["days_in"], 2);
        assert_eq!(json["days"][3]["why"], "included");
    }
}
