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
