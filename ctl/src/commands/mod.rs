//! One module per subcommand group: clap args and an async fn writing to any `Write`.

pub mod agents;
pub mod alerts;
pub mod apply;
pub mod auth;
pub mod backfill;
pub mod calendars;
pub mod clean;
pub mod coordinators;
pub mod dep;
pub mod eta;
pub mod explain;
pub mod logs;
pub mod ops;
pub mod pools;
pub mod run;
pub mod status;
pub mod task;
pub mod tasks;
pub mod timings;
pub mod version;
pub mod watch;

use crate::day::key_of;
use std::io::{self, Write};

use goflow_proto::InstanceRef;

use crate::output;

/// Instances listed one by one; a backfill of a year is summed up after them.
const MAX_LISTED: usize = 50;

/// Prints the server's message (if any) and the instances an operation touched.
pub fn write_refs(out: &mut impl Write, message: &str, refs: &[InstanceRef]) -> io::Result<()> {
    if !message.is_empty() {
        writeln!(out, "{message}")?;
    }
    match refs.len() {
        0 => writeln!(out, "no instances"),
        n => {
            writeln!(out, "{}:", output::count(n, "instance"))?;
            // A dry run lists instances that do not exist yet: they have no id.
            let id = |r: &InstanceRef| if r.id > 0 { r.id.to_string() } else { "new".into() };
            let rows = refs
                .iter()
                .take(MAX_LISTED)
                .map(|r| vec![id(r), r.task.clone(), key_of(&r.period, &r.etl_day).to_string()])
                .collect();
            out.write_all(output::table(["ID", "TASK", "ETL_DAY"], rows).as_bytes())?;
            if n > MAX_LISTED {
                let days: std::collections::BTreeSet<&str> =
                    refs.iter().map(|r| key_of(&r.period, &r.etl_day)).collect();
                writeln!(
                    out,
                    "... and {} more, {} over {} ({} .. {})",
                    n - MAX_LISTED,
                    output::count(n, "instance"),
                    output::count(days.len(), "day"),
                    days.first().unwrap_or(&""),
                    days.last().unwrap_or(&"")
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_counted_and_listed() {
        let mut out = Vec::new();
        let refs = vec![
            InstanceRef {
                id: 7,
                task: "extract".into(),
                etl_day: "20260101".into(),
                ..Default::default()
            },
            InstanceRef {
                id: 12,
                task: "load".into(),
                etl_day: "20260101".into(),
                ..Default::default()
            },
        ];
        write_refs(&mut out, "queued 2 instances", &refs).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "queued 2 instances\n2 instances:\nID   TASK      ETL_DAY\n7    extract   20260101\n12   load      20260101\n"
        );
        let many: Vec<InstanceRef> = (0..120)
            .map(|i| InstanceRef {
                id: i,
                task: "t".into(),
                etl_day: format!("202601{:02}", i % 3 + 1),
                ..Default::default()
            })
            .collect();
        let mut out = Vec::new();
        write_refs(&mut out, "", &many).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1 + 1 + MAX_LISTED + 1, "{text}");
        assert!(
            text.ends_with("... and 70 more, 120 instances over 3 days (20260101 .. 20260103)\n"),
            "{text}"
        );
        let one_day: Vec<InstanceRef> = (0..51)
            .map(|i| InstanceRef {
                id: i + 1,
                task: format!("t{i}"),
                etl_day: "20260101".into(),
                ..Default::default()
            })
            .collect();
        let mut out = Vec::new();
        write_refs(&mut out, "", &one_day).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("51 instances over 1 day (20260101 .. 20260101)\n"),
            "{text}"
        );
        let mut out = Vec::new();
        write_refs(&mut out, "", &[]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "no instances\n");
    }

    #[test]
    fn one_instance_is_singular_and_a_new_one_has_no_id() {
        let mut out = Vec::new();
        let refs = [InstanceRef {
            id: 0,
            task: "load".into(),
            etl_day: "20260102".into(),
            ..Default::default()
        }];
        write_refs(&mut out, "", &refs).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1 instance:\nID    TASK   ETL_DAY\nnew   load   20260102\n"
        );
    }
}
