//! `riptide-bench`: see the crate documentation and `riptide-bench --help`.

use clap::Parser;
use riptide_bench::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    if let Command::Summarize(args) = &cli.command {
        match riptide_bench::summary::summarize_dir(&args.dir) {
            Ok(text) => {
                println!("{text}");
                std::process::exit(0);
            }
            Err(error) => {
                eprintln!("riptide-bench: {error:#}");
                std::process::exit(2);
            }
        }
    }
    if let Command::Create(args) = &cli.command {
        match riptide_bench::run::create_timed(args) {
            Ok(_) => std::process::exit(0),
            Err(error) => {
                eprintln!("riptide-bench: {error:#}");
                std::process::exit(2);
            }
        }
    }
    let argv: Vec<String> = std::env::args().collect();
    match riptide_bench::run::execute(&cli.command, argv) {
        Ok(report) => {
            let failed = report.produce.as_ref().is_some_and(|p| p.msgs == 0)
                || report
                    .consume
                    .as_ref()
                    .is_some_and(|c| c.msgs == 0 && c.errors > 0);
            std::process::exit(if failed { 1 } else { 0 });
        }
        Err(error) => {
            eprintln!("riptide-bench: {error:#}");
            std::process::exit(2);
        }
    }
}
