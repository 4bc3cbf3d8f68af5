//! Writes mcsd's man page, `mcsd.8`, into the directory named by its one
//! argument: `make man` runs it to put the page into the build tree.
//!
//! The page is rendered from the daemon's own flag definitions, so it
//! cannot drift from `mcsd --help`; being an example, this generator is
//! never installed, and the shipped `mcsd` does not link clap_mangen.

use std::path::Path;
use std::process::ExitCode;

// Only `Args` is used here: the rest of the binary is dead code.
#[allow(dead_code)]
#[path = "../src/main.rs"]
mod daemon;

/// Renders the page and puts it in `dir` under its conventional name. The
/// page appears whole (written aside, then renamed): parallel `make
/// install-files` runs may copy it while another one regenerates it.
fn write_page(dir: &Path) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(<daemon::Args as clap::CommandFactory>::command()).section("8");
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
        eprintln!("usage: mcsd-man DIR");
        return ExitCode::from(2);
    };
    match write_page(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "mcsd-man: writing mcsd.8 into {}: {e}",
                Path::new(&dir).display()
            );
            ExitCode::FAILURE
        }
    }
}
