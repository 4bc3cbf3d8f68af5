//! Writes mcsctl's man page, `mcsctl.1`, into the directory named by its
//! one argument: `make man` runs it to put the page into the build tree.
//!
//! The page is rendered from mcsctl's own command definitions, so it
//! cannot drift from `mcsctl --help`; being an example, this generator is
//! never installed, and the shipped `mcsctl` does not link clap_mangen.

use std::path::Path;
use std::process::ExitCode;

// Only `Cli` is used here: the rest of the binary is dead code.
#[allow(dead_code)]
#[path = "../src/bin/mcsctl/main.rs"]
mod mcsctl;
// mcsctl's modules name these from the crate root, which here is this file.
use mcsctl::{engine, output, Failure};

/// Renders the page and puts it in `dir` under its conventional name. The
/// page appears whole (written aside, then renamed): parallel `make
/// install-files` runs may copy it while another one regenerates it.
fn write_page(dir: &Path) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(<mcsctl::cli::Cli as clap::CommandFactory>::command());
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::create_dir_all(dir)?;
    let name = man.get_filename();
    let aside = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&aside, page)?;
    std::fs::rename(&aside, dir.join(name))
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: mcsctl-man DIR");
        return ExitCode::from(2);
    };
    match write_page(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "mcsctl-man: writing mcsctl.1 into {}: {e}",
                Path::new(&dir).display()
            );
            ExitCode::FAILURE
        }
    }
}
