//! The seed's operator verbs on the `goflow` binary: `goflow run | dep | kill | do_all_job`,
//! written as the seed's users wrote them (`goflow run -j TASK -d YYYY-MM-DD -down`).
//!
//! goflow's own parser takes their arguments untouched (clap would read `-down` as `-d own`);
//! [`goflowctl::seed_args`] rewrites the seed's spellings, goflowctl's parser reads the result,
//! and [`goflowctl::execute`] runs it: the same flags, output, exit status and server
//! (`--server`, `GOFLOW_SERVER`, default http://127.0.0.1:7070) as the goflowctl verb.

use std::ffi::OsString;

use clap::{Args, CommandFactory, FromArgMatches, Subcommand};

#[derive(Subcommand)]
pub enum SeedVerb {
    /// `goflowctl run`, as the seed wrote it: run -j TASK -d DAY [--force] [-down] [-up] [--wait]
    #[command(disable_help_flag = true)]
    Run(PassThrough),
    /// `goflowctl dep`: a task's dependencies (dep -j TASK [-up|-down])
    #[command(disable_help_flag = true)]
    Dep(PassThrough),
    /// `goflowctl kill`: kill -j TASK -d DAY, or -st DAY -et DAY [-down]
    #[command(disable_help_flag = true)]
    Kill(PassThrough),
    /// `goflowctl do-all-job`: every scheduled root task for a day (do_all_job -d DAY)
    #[command(name = "do_all_job", alias = "do-all-job", disable_help_flag = true)]
    DoAllJob(PassThrough),
}

/// Everything after the verb, for goflowctl's parser (`goflow run --help` shows its flags).
#[derive(Args)]
pub struct PassThrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

impl SeedVerb {
    /// Runs the verb as goflowctl does; returns the exit status (0 ok, 1 failed). A usage
    /// error, or `--help`, prints and exits here, as goflowctl does (status 2, or 0).
    pub async fn run(self) -> u8 {
        let (verb, args) = match self {
            Self::Run(p) => ("run", p.args),
            Self::Dep(p) => ("dep", p.args),
            Self::Kill(p) => ("kill", p.args),
            Self::DoAllJob(p) => ("do-all-job", p.args),
        };
        let args = match with_config_server(args) {
            Ok(args) => args,
            Err(e) => {
                eprintln!("goflow {verb}: error: {e:#}");
                return 2;
            }
        };
        let argv = [OsString::from("goflow"), OsString::from(verb)]
            .into_iter()
            .chain(goflowctl::seed_args(args));
        // goflowctl's parser, named `goflow` so its usage lines read `goflow run ...`.
        let parsed = goflowctl::Cli::command()
            .name("goflow")
            .bin_name("goflow")
            .try_get_matches_from(argv)
            .and_then(|matches| goflowctl::Cli::from_arg_matches(&matches));
        match parsed {
            Ok(cli) => goflowctl::execute(cli).await,
            Err(usage) => usage.exit(),
        }
    }
}

/// The seed passed its config file to every verb (`goflow run -c goflow_conf.json -j ...`):
/// `-c FILE` (or `--cfg_file`, `--config`) is taken out, and unless `--server` or
/// GOFLOW_SERVER says otherwise, the coordinator is the one the file names (`Worker.Server`),
/// or the default.
fn with_config_server(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let mut rest = Vec::with_capacity(args.len());
    let mut config: Option<std::path::PathBuf> = None;
    let mut has_server = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if text == "--" {
            rest.push(arg);
            rest.extend(args.by_ref());
            break;
        }
        if matches!(text.as_str(), "-c" | "--cfg_file" | "--config") {
            let file = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{text} needs a file (the seed's goflow_conf.json)"))?;
            config = Some(file.into());
            continue;
        }
        if let Some(file) = ["--cfg_file=", "--config="]
            .iter()
            .find_map(|p| text.strip_prefix(p))
        {
            config = Some(file.into());
            continue;
        }
        has_server |= text == "--server" || text.starts_with("--server=");
        rest.push(arg);
    }
    if let Some(path) = config
        && !has_server
        && std::env::var_os("GOFLOW_SERVER").is_none()
    {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let settings = crate::config::Settings::load(Some(&path), &env, crate::config::Role::Agent)?;
        rest.splice(
            0..0,
            [OsString::from("--server"), OsString::from(settings.server)],
        );
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn the_seeds_config_file_names_the_server_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("goflow_conf.json");
        std::fs::write(
            &conf,
            r#"{"Common": {"MysqlConn": "mysql://u:p@db/goflow"}, "Worker": {"Server": "10.0.0.7:7070"}}"#,
        )
        .unwrap();
        let args = |line: &str| line.split_whitespace().map(OsString::from).collect::<Vec<_>>();
        let c = conf.to_str().unwrap();
        // GOFLOW_SERVER would win; the test environment must not set it.
        if std::env::var_os("GOFLOW_SERVER").is_none() {
            assert_eq!(
                strings(with_config_server(args(&format!("-c {c} -j a -d 2026-01-05 -down"))).unwrap()),
                [
                    "--server",
                    "http://10.0.0.7:7070",
                    "-j",
                    "a",
                    "-d",
                    "2026-01-05",
                    "-down"
                ]
            );
        }
        assert_eq!(
            strings(with_config_server(args(&format!("--cfg_file={c} -j a --server http://x:1"))).unwrap()),
            ["-j", "a", "--server", "http://x:1"]
        );
        assert!(with_config_server(args("-j a -c")).is_err());
        assert_eq!(strings(with_config_server(args("-j a")).unwrap()), ["-j", "a"]);
    }
}
