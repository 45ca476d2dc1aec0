//! `goflowctl logs -j TASK -d DAY [--try N] [-f]`

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use goflow_proto::{LogChunk, TailLogsRequest};

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

/// How long a cut follow keeps trying to resume (a takeover takes a few seconds).
const RESUME_PATIENCE: Duration = Duration::from_secs(60);

/// Writes the log bytes raw, as they come, flushing after each chunk. A follow whose stream
/// is cut (its coordinator stepped down or went away) reconnects and resumes at the byte
/// where it was, so nothing is printed twice or skipped.
pub async fn run(client: &mut Client, args: &LogsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut next = request(args);
    let mut printed = Printed::default();
    // Since when a cut follow has been trying to resume without getting a new byte.
    let mut cut_since: Option<Instant> = None;
    loop {
        let within_patience =
            |cut_since: Option<Instant>| cut_since.is_some_and(|since| since.elapsed() < RESUME_PATIENCE);
        let mut stream = match client.tail_logs(next.clone()).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable && within_patience(cut_since) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    let unseen = printed.unseen(&chunk);
                    if !unseen.is_empty() {
                        cut_since = None;
                    }
                    out.write_all(unseen)?;
                    out.flush()?;
                    if !chunk.eof {
                        continue;
                    }
                    // A resumed follow of "the latest try" was pinned to the try it followed:
                    // once that ended, it looks once more for a later one (a retry).
                    if args.try_number.is_none() && next.try_number != 0 {
                        next = request(args);
                        break;
                    }
                    return Ok(());
                }
                Ok(None) if !args.follow => return Ok(()),
                Err(status) if !args.follow || status.code() != tonic::Code::Unavailable => {
                    return Err(status.into());
                }
                // Cut: the coordinator serving it stepped down (or the stream just ended).
                cut => {
                    if let Err(status) = cut {
                        tracing::debug!("the log stream was cut ({}); resuming", status.message());
                    }
                    cut_since.get_or_insert_with(Instant::now);
                    anyhow::ensure!(
                        within_patience(cut_since),
                        "the log stream keeps breaking off without new output; giving up"
                    );
                    next = printed.resume(args);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    break;
                }
            }
        }
    }
}

/// How far the output went: the try and the byte offset after its last printed byte.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Printed {
    try_number: i32,
    offset: i64,
}

impl Printed {
    /// The part of `chunk` not printed yet (all of it, unless a reconnect read it again).
    fn unseen<'a>(&mut self, chunk: &'a LogChunk) -> &'a [u8] {
        if chunk.try_number < self.try_number {
            return &[];
        }
        let end = chunk.offset + chunk.data.len() as i64;
        let from = if chunk.try_number == self.try_number {
            (self.offset - chunk.offset).clamp(0, chunk.data.len() as i64) as usize
        } else {
            0
        };
        if chunk.try_number > self.try_number || end > self.offset {
            *self = Self {
                try_number: chunk.try_number,
                offset: end,
            };
        }
        &chunk.data[from..]
    }

    /// The request that resumes here: the try printed so far, from the next byte.
    fn resume(&self, args: &LogsArgs) -> TailLogsRequest {
        let mut next = request(args);
        if self.try_number > 0 {
            next.try_number = self.try_number;
            next.offset = self.offset;
        }
        next
    }
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

    fn chunk(try_number: i32, offset: i64, data: &[u8]) -> LogChunk {
        LogChunk {
            offset,
            data: data.to_vec(),
            try_number,
            eof: false,
        }
    }

    #[test]
    fn a_resumed_follow_prints_each_byte_once() {
        let args = parse(&["-j", "a", "-d", "20260102", "-f"]).unwrap();
        let mut printed = Printed::default();
        assert_eq!(printed.unseen(&chunk(1, 0, b"hello ")), b"hello ");
        // Cut here: the follow resumes pinned to try 1 at byte 6.
        let next = printed.resume(&args);
        assert_eq!((next.try_number, next.offset, next.follow), (1, 6, true));
        assert_eq!(printed.unseen(&chunk(1, 6, b"world\n")), b"world\n");
        // Looking again for the latest try reads try 1 from its start: nothing is repeated.
        assert_eq!(printed.unseen(&chunk(1, 0, b"hello wor")), b"");
        assert_eq!(printed.unseen(&chunk(1, 9, b"ld\n")), b"");
        // A later try (a retry) prints from its start.
        assert_eq!(printed.unseen(&chunk(2, 0, b"again\n")), b"again\n");
        assert_eq!(printed.unseen(&chunk(1, 12, b"late")), b"");
        // A chunk that overlaps what was printed prints only its new end.
        assert_eq!(printed.unseen(&chunk(2, 3, b"in\nmore")), b"more");
        assert_eq!(
            printed,
            Printed {
                try_number: 2,
                offset: 10
            }
        );
    }
}
