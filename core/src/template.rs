//! Command templating: `{{etl_day}}` and friends in a task's command line.
//!
//! Every value substituted is produced here from validated parts (digits of a date, an id that
//! matched its pattern, a number), never free text, so templating cannot inject shell.

use std::collections::BTreeMap;

use crate::dag::is_valid_task_id;
use crate::{EtlDay, Period};

/// The variables a command may use, in the order they are documented.
pub const VARIABLES: &[&str] = &[
    "etl_day",
    "etl_day_dash",
    "etl_hour",
    "etl_month",
    "period",
    "prev_day",
    "next_day",
    "task_id",
    "try_number",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template variable {{{{{name}}}}} (known: {known})", known = VARIABLES.join(", "))]
    UnknownVariable { name: String },
    #[error("unclosed {{{{ at byte {at}")]
    Unclosed { at: usize },
}

/// The facts of one try that a command can see.
#[derive(Debug, Clone)]
pub struct TryContext<'a> {
    pub task_id: &'a str,
    /// The instance's period: a day, an hour or a month.
    pub period: Period,
    pub try_number: u32,
    /// Unique per try, so a command can make its side effects idempotent.
    pub attempt_id: &'a str,
}

impl TryContext<'_> {
    fn value(&self, name: &str) -> Option<String> {
        debug_assert!(is_valid_task_id(self.task_id), "task ids are validated on apply");
        // etl_day is the day the period falls in (a month's first day); etl_hour the hour it
        // starts with; etl_month the month it falls in.
        let etl_day: EtlDay = self.period.etl_day();
        Some(match name {
            "etl_day" => etl_day.compact(),
            "etl_day_dash" => etl_day.dashed(),
            "etl_hour" => self.period.hour_key(),
            "etl_month" => self.period.month_key(),
            "period" => self.period.key(),
            "prev_day" => etl_day.offset(-1).compact(),
            "next_day" => etl_day.offset(1).compact(),
            "task_id" => self.task_id.to_string(),
            "try_number" => self.try_number.to_string(),
            _ => return None,
        })
    }

    /// The environment of the command: `GOFLOW_ETL_DAY`, ..., plus `GOFLOW_ATTEMPT_ID`.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = VARIABLES
            .iter()
            .map(|name| {
                (
                    format!("GOFLOW_{}", name.to_ascii_uppercase()),
                    self.value(name).unwrap(),
                )
            })
            .collect();
        env.insert("GOFLOW_ATTEMPT_ID".into(), self.attempt_id.to_string());
        env
    }
}

/// Splits a command into literal text and variable names; `{{ name }}` may have spaces.
fn parse(command: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = vec![];
    let mut rest = command;
    let mut consumed = 0;
    while let Some(open) = rest.find("{{") {
        pieces.push(Piece::Text(&rest[..open]));
        let after_open = &rest[open + 2..];
        let close = after_open
            .find("}}")
            .ok_or(TemplateError::Unclosed { at: consumed + open })?;
        let name = after_open[..close].trim();
        if !VARIABLES.contains(&name) {
            return Err(TemplateError::UnknownVariable {
                name: name.to_string(),
            });
        }
        pieces.push(Piece::Var(name));
        let used = open + 2 + close + 2;
        consumed += used;
        rest = &rest[used..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Checks a command's placeholders when a task is defined, so a typo fails at `apply`.
pub fn check(command: &str) -> Result<(), TemplateError> {
    parse(command).map(drop)
}

/// The command line with every placeholder replaced.
pub fn render(command: &str, ctx: &TryContext<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(command.len() + 16);
    for piece in parse(command)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => out.push_str(&ctx.value(name).expect("parse checked the name")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TryContext<'static> {
        TryContext {
            task_id: "load_orders",
            period: Period::parse("20260301").unwrap(),
            try_number: 2,
            attempt_id: "17-2",
        }
    }

    #[test]
    fn renders_every_variable() {
        let cmd = "run {{etl_day}} {{ etl_day_dash }} {{prev_day}} {{next_day}} {{task_id}} {{try_number}}";
        assert_eq!(
            render(cmd, &ctx()).unwrap(),
            "run 20260301 2026-03-01 20260228 20260302 load_orders 2"
        );
    }

    #[test]
    fn leaves_other_braces_and_shell_alone() {
        assert_eq!(
            render("echo ${HOME} {x} }}", &ctx()).unwrap(),
            "echo ${HOME} {x} }}"
        );
        assert_eq!(render("", &ctx()).unwrap(), "");
    }

    #[test]
    fn refuses_unknown_and_unclosed_placeholders() {
        let err = check("echo {{etl_dya}}").unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownVariable {
                name: "etl_dya".into()
            }
        );
        assert!(err.to_string().contains("{{etl_dya}}"), "{err}");
        assert_eq!(
            check("echo {{etl_day").unwrap_err(),
            TemplateError::Unclosed { at: 5 }
        );
        assert!(check("a {{etl_day}} b {{nope}}").is_err());
    }

    #[test]
    fn environment_mirrors_the_variables() {
        let env = ctx().env();
        assert_eq!(env["GOFLOW_ETL_DAY"], "20260301");
        assert_eq!(env["GOFLOW_ETL_DAY_DASH"], "2026-03-01");
        assert_eq!(env["GOFLOW_TASK_ID"], "load_orders");
        assert_eq!(env["GOFLOW_TRY_NUMBER"], "2");
        assert_eq!(env["GOFLOW_ATTEMPT_ID"], "17-2");
        assert_eq!(env["GOFLOW_ETL_HOUR"], "2026030100");
        assert_eq!(env["GOFLOW_ETL_MONTH"], "202603");
        assert_eq!(env["GOFLOW_PERIOD"], "20260301");
        assert_eq!(env.len(), VARIABLES.len() + 1);
    }

    #[test]
    fn hourly_and_monthly_periods_fill_their_own_variables() {
        let mut ctx = ctx();
        ctx.period = Period::parse("2026112013").unwrap();
        assert_eq!(
            render("{{etl_hour}} {{etl_day}} {{etl_month}} {{period}}", &ctx).unwrap(),
            "2026112013 20261120 202611 2026112013"
        );
        ctx.period = Period::parse("202611").unwrap();
        assert_eq!(
            render("{{etl_month}} {{etl_day}} {{etl_hour}} {{period}}", &ctx).unwrap(),
            "202611 20261101 2026110100 202611"
        );
    }
}
