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
    /// Print control bytes as they are, even on a terminal (where they are otherwise shown
    /// as `^[`-style escapes, so that a log cannot retitle the window or clear the screen).
    /// Output that is not a terminal (a pipe, a file) is always byte-exact.
    #[arg(long)]
    pub raw: bool,
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
    use std::io::IsTerminal;
    let mut shown = Neutraliser::new(!args.raw && std::io::stdout().is_terminal());
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
                    out.write_all(&shown.filter(unseen))?;
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
                    out.write_all(&shown.finish())?;
                    return Ok(());
                }
                Ok(None) if !args.follow => {
                    out.write_all(&shown.finish())?;
                    return Ok(());
                }
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

/// Shows a log on a terminal without letting it drive the terminal: control bytes (ESC and
/// the rest of C0 but newline and tab, DEL, and C1 controls written as UTF-8) become visible
/// `^[`-style text. A carriage return is kept before a newline (CRLF) only. Off, bytes pass
/// through unchanged.
struct Neutraliser {
    on: bool,
    /// The chunk before ended inside a possible two-byte C1 (0xC2) or a CR.
    held: Option<u8>,
}

impl Neutraliser {
    fn new(on: bool) -> Self {
        Self { on, held: None }
    }

    fn filter<'a>(&mut self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if !self.on {
            return bytes.into();
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut input: Vec<u8> = self.held.take().into_iter().collect();
        input.extend_from_slice(bytes);
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            let next = input.get(i + 1).copied();
            match b {
                b'\n' | b'\t' => out.push(b),
                b'\r' if next == Some(b'\n') => out.push(b),
                b'\r' | 0xC2 if next.is_none() => {
                    self.held = Some(b);
                }
                0xC2 if matches!(next, Some(0x80..=0x9F)) => {
                    out.extend_from_slice(format!("<U+{:04X}>", next.unwrap()).as_bytes());
                    i += 1;
                }
                0x00..=0x1F => out.extend_from_slice(&[b'^', b + 0x40]),
                0x7F => out.extend_from_slice(b"^?"),
                _ => out.push(b),
            }
            i += 1;
        }
        out.into()
    }

    /// What a last chunk left held, shown on its own.
    fn finish(&mut self) -> Vec<u8> {
        match self.held.take() {
            Some(b'\r') => b"^M".to_vec(),
            Some(b) => vec![b],
            None => vec![],
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

    /// The probe's log set the window title and cleared the screen through `goflowctl logs`.
    #[test]
    fn control_bytes_are_shown_not_obeyed_on_a_terminal() {
        let evil =
            b"title\x1b]0;pwned\x07 clear\x1b[2J\x1bc del\x7f bell\x07 ok\tdone\r\n\xc2\x9b2J caf\xc3\xa9\n";
        let mut on = Neutraliser::new(true);
        let shown = on.filter(evil).into_owned();
        assert_eq!(
            String::from_utf8(shown).unwrap(),
            "title^[]0;pwned^G clear^[[2J^[c del^? bell^G ok\tdone\r\n<U+009B>2J café\n"
        );
        assert!(on.finish().is_empty());
        // Split across chunks: a C1 control and a CRLF are still told apart.
        let mut on = Neutraliser::new(true);
        let mut shown = vec![];
        for chunk in [&b"a\xc2"[..], b"\x9bb\r", b"\nc\r"] {
            shown.extend_from_slice(&on.filter(chunk));
        }
        shown.extend(on.finish());
        assert_eq!(String::from_utf8(shown).unwrap(), "a<U+009B>b\r\nc^M");
        // --raw, or a pipe: byte-exact.
        let mut off = Neutraliser::new(false);
        assert_eq!(&*off.filter(evil), &evil[..]);
        assert!(parse(&["-j", "t", "-d", "20260101", "--raw"]).unwrap().raw);
    }

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
