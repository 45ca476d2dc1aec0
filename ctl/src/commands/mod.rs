//! One module per subcommand group: clap args and an async fn writing to any `Write`.

pub mod agents;
pub mod apply;
pub mod dep;
pub mod logs;
pub mod ops;
pub mod run;
pub mod status;
pub mod tasks;
pub mod version;

use std::io::{self, Write};

use goflow_proto::InstanceRef;

use crate::output;

/// Prints the server's message (if any) and the instances an operation touched.
pub fn write_refs(out: &mut impl Write, message: &str, refs: &[InstanceRef]) -> io::Result<()> {
    if !message.is_empty() {
        writeln!(out, "{message}")?;
    }
    match refs.len() {
        0 => writeln!(out, "no instances"),
        n => {
            writeln!(out, "{n} instance{}:", if n == 1 { "" } else { "s" })?;
            let rows = refs
                .iter()
                .map(|r| vec![r.id.to_string(), r.task.clone(), r.etl_day.clone()])
                .collect();
            out.write_all(output::table(["ID", "TASK", "ETL_DAY"], rows).as_bytes())
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
            },
            InstanceRef {
                id: 12,
                task: "load".into(),
                etl_day: "20260101".into(),
            },
        ];
        write_refs(&mut out, "queued 2 instances", &refs).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "queued 2 instances\n2 instances:\nID   TASK      ETL_DAY\n7    extract   20260101\n12   load      20260101\n"
        );
        let mut out = Vec::new();
        write_refs(&mut out, "", &[]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "no instances\n");
    }
}
