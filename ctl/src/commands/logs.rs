//! `goflowctl logs -j TASK -d DAY [--try N] [-f]`

use std::io::Write;

use clap::Args;
use goflow_proto::TailLogsRequest;

use crate::{Client, day::parse_day};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    /// The data date (yyyymmdd or yyyy-mm-dd).
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day)]
    pub day: String,
    /// Which try (1, 2, ...); the latest when not given.
    #[arg(long = "try", value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub try_number: Option<i32>,
    /// Keep printing output as it comes until the try ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

pub fn request(args: &LogsArgs) -> TailLogsRequest {
    TailLogsRequest {
        task: args.task.clone(),
        etl_day: args.day.clone(),
        try_number: args.try_number.unwrap_or(0),
        follow: args.follow,
        ..Default::default()
    }
}

/// Writes the log bytes raw, as they come, flushing after each chunk.
pub async fn run(client: &mut Client, args: &LogsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut stream = client.tail_logs(request(args)).await?.into_inner();
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)?;
        out.flush()?;
        if chunk.eof {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LogsArgs, clap::Error> {
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        crate::tests::parse(&all).map(|cli| match cli.command {
            crate::Command::Logs(args) => args,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn request_fields() {
        let req = request(&parse(&["-j", "a", "-d", "2026-01-02"]).unwrap());
        assert_eq!((req.task.as_str(), req.etl_day.as_str()), ("a", "20260102"));
        assert_eq!(req.try_number, 0, "0 asks for the latest try");
        assert!(!req.follow);
        let req = request(&parse(&["-j", "a", "-d", "20260102", "--try", "3", "-f"]).unwrap());
        assert_eq!(req.try_number, 3);
        assert!(req.follow);
        assert!(parse(&["-j", "a", "-d", "20260102", "--try", "0"]).is_err());
        assert!(parse(&["-j", "a"]).is_err());
    }
}
