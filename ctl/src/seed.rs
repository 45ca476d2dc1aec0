//! The seed's spellings of `run`, `dep`, `kill` and `do_all_job` (Python argparse, where a
//! single dash may start a long name: `-down`), rewritten to goflowctl's.

use std::ffi::OsString;

/// Seed flags that take no value, and what goflowctl spells them.
const SEED_FLAGS: &[(&str, &[&str])] = &[
    ("-down", &["--down"]),
    ("--with_downstream", &["--down"]),
    ("-up", &["--up"]),
    ("--with_upstream", &["--up"]),
    ("-up_down", &["--up", "--down"]),
    ("--with_up_down", &["--up", "--down"]),
    ("-f", &["--force"]),
];

/// Seed options that take a value (`--job_id X` or `--job_id=X`), and goflowctl's names.
const SEED_OPTIONS: &[(&str, &str)] = &[
    ("--job_id", "--task"),
    ("--date", "--day"),
    ("-st", "--from"),
    ("--start_date", "--from"),
    ("-et", "--to"),
    ("--end_date", "--to"),
];

/// Rewrites the arguments of a seed verb (those after `goflow run`, ...) into goflowctl's
/// spellings: `-down` becomes `--down`, `-up` `--up`, `-up_down` both, `-f` `--force`,
/// `--job_id` `--task`, `--date` `--day`, `-st`/`--start_date` `--from`, `-et`/`--end_date`
/// `--to`.
///
/// Only whole arguments are rewritten (`-downstream` or a value `x-down` stay as they are),
/// and nothing after `--`. Every other argument, goflowctl's own spellings included, passes
/// unchanged, so `goflow run -j a -d 2026-01-05 --down --wait` means what goflowctl says.
pub fn seed_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        if let Some((_, ours)) = SEED_FLAGS.iter().find(|(seed, _)| *seed == text) {
            out.extend(ours.iter().map(OsString::from));
            continue;
        }
        let (name, value) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (text, None),
        };
        match SEED_OPTIONS.iter().find(|(seed, _)| *seed == name) {
            Some((_, ours)) => match value {
                Some(value) => out.push(format!("{ours}={value}").into()),
                None => out.push(OsString::from(*ours)),
            },
            None => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, tests::parse};

    /// The rewrite of a command line split at spaces, joined again.
    fn rewrite(line: &str) -> String {
        let rewritten: Vec<String> = seed_args(line.split_whitespace().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        rewritten.join(" ")
    }

    /// `goflowctl VERB ARGS...` after the rewrite, as goflowctl's parser reads it.
    fn parse_seed(verb: &str, line: &str) -> Result<Command, clap::Error> {
        let line = format!("{verb} {}", rewrite(line));
        parse(&line.split_whitespace().collect::<Vec<_>>()).map(|cli| cli.command)
    }

    #[test]
    fn down_and_up_become_long_flags() {
        assert_eq!(rewrite("-j a -d 2026-01-05 -down"), "-j a -d 2026-01-05 --down");
        assert_eq!(rewrite("-up -j a"), "--up -j a");
        assert_eq!(rewrite("-up_down"), "--up --down");
        assert_eq!(rewrite("-f"), "--force");
    }

    #[test]
    fn goflowctl_spellings_pass_unchanged() {
        let ours = "--server http://h:1 -j a -d 20260105 --force --down --up --wait \
                    --from 20260101 --to 20260102 -o json --task=a --day=20260105";
        assert_eq!(
            rewrite(ours),
            ours.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn only_whole_arguments_are_rewritten() {
        let untouched = "-downstream x-down -down=1 -dup --down- -downx -upx --up -ff";
        assert_eq!(rewrite(untouched), untouched);
    }

    #[test]
    fn nothing_after_a_double_dash() {
        assert_eq!(rewrite("-down -- -down -up"), "--down -- -down -up");
    }

    #[test]
    fn the_seed_long_names_and_their_values() {
        assert_eq!(
            rewrite("--job_id a --date 2026-01-05 --with_downstream --with_upstream"),
            "--task a --day 2026-01-05 --down --up"
        );
        assert_eq!(
            rewrite("--job_id=a -st 2026-01-01 --end_date=2026-01-03 --with_up_down"),
            "--task=a --from 2026-01-01 --to=2026-01-03 --up --down"
        );
        assert_eq!(
            rewrite("-et 2026-01-03 --start_date 2026-01-01"),
            "--to 2026-01-03 --from 2026-01-01"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_pass_unchanged() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'-', 0xff]);
        assert_eq!(
            seed_args([odd.clone(), OsString::from("-down")]),
            [odd, OsString::from("--down")]
        );
    }

    #[test]
    fn without_the_rewrite_clap_reads_down_as_a_date() {
        let err = parse(&["run", "-j", "a", "-down"]).unwrap_err();
        assert!(err.to_string().contains(r#"invalid period "own""#), "{err}");
        let err = parse(&["run", "-j", "a", "-d", "2026-01-05", "-down"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("'--day <DAY>' cannot be used multiple times"),
            "{err}"
        );
    }

    #[test]
    fn the_seed_command_lines_parse_as_goflowctl_ones() {
        let Command::Run(run) = parse_seed("run", "-j a -d 2026-01-05 -down").unwrap() else {
            panic!("not run")
        };
        assert_eq!(run.task, "a");
        assert_eq!(run.days.day.as_deref(), Some("20260105"));
        assert!(run.down && !run.up && !run.force && !run.wait);

        let Command::Run(run) = parse_seed("run", "-j a -d 2026-01-05 --force -up --wait").unwrap() else {
            panic!("not run")
        };
        assert!(run.up && run.force && run.wait && !run.down);

        let Command::Run(run) =
            parse_seed("run", "--job_id a -st 2026-01-01 -et 2026-01-03 --with_up_down").unwrap()
        else {
            panic!("not run")
        };
        assert_eq!(
            (run.days.from.as_deref(), run.days.to.as_deref()),
            (Some("20260101"), Some("20260103"))
        );
        assert!(run.up && run.down);

        let Command::Dep(dep) = parse_seed("dep", "-j b -up").unwrap() else {
            panic!("not dep")
        };
        assert_eq!(dep.task, "b");
        assert!(dep.up && !dep.down);

        let Command::Kill(kill) = parse_seed("kill", "-j a -st 2026-01-01 -et 2026-01-02 -down").unwrap()
        else {
            panic!("not kill")
        };
        assert_eq!(kill.task, "a");
        assert!(kill.down);
        assert_eq!(kill.days.to.as_deref(), Some("20260102"));

        let Command::DoAllJob(day) = parse_seed("do-all-job", "--date 2026-01-05").unwrap() else {
            panic!("not do-all-job")
        };
        assert_eq!(day.day, "20260105");
        assert!(parse_seed("do-all-job", "-d 2026-02-30").is_err());
    }
}
