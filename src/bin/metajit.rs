//! `metajit`: inspect, verify and clear the compiled-kernel cache.
//!
//! ```text
//! cargo run --release --bin metajit -- cache stats    # where, how big, how many entries
//! cargo run --release --bin metajit -- cache path     # the cache directory
//! cargo run --release --bin metajit -- cache verify   # check every entry (--remove: drop bad ones)
//! cargo run --release --bin metajit -- cache clear    # remove every entry
//! ```
//!
//! The directory and bound come from `METAJIT_CACHE_DIR` and `METAJIT_CACHE_MAX_MB`, as for
//! every metajit program. `stats` and `verify` only read the cache: they create, write and
//! touch nothing (so they work on a full disk); `verify --remove` and `clear` delete. Exit status: 0 on success, 1 when `verify` found damaged entries,
//! 2 on bad usage or a failure.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::SystemTime;

use metajit::cache::{CacheConfig, DiskTier, FORMAT_VERSION};

const USAGE: &str = "usage: metajit cache <stats|path|verify [--remove]|clear>

  stats    the cache directory, its size bound, entries and bytes per backend
  path     the cache directory
  verify   read and check every entry; --remove deletes the damaged ones
  clear    remove every entry (all format versions)

Settings: METAJIT_CACHE_DIR (default $XDG_CACHE_HOME/metajit or $HOME/.cache/metajit),
METAJIT_CACHE_MAX_MB (default 1024).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("metajit: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[&str]) -> Result<ExitCode, String> {
    let (cmd, rest) = match args {
        ["cache", cmd, rest @ ..] => (*cmd, rest),
        ["-h" | "--help" | "help", ..] => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        _ => return Err(format!("expected a command\n{USAGE}")),
    };
    let remove = match (cmd, rest) {
        ("verify", ["--remove"]) => true,
        (_, []) => false,
        _ => return Err(format!("unexpected arguments {rest:?}\n{USAGE}")),
    };
    let config = CacheConfig::from_env().map_err(|e| e.to_string())?;
    if cmd == "path" {
        println!("{}", config.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    if !["stats", "verify", "clear"].contains(&cmd) {
        return Err(format!("unknown command {cmd:?}\n{USAGE}"));
    }
    if !config.dir.exists() {
        println!(
            "metajit cache: {} does not exist (nothing cached yet)",
            config.dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Any backend name opens the tree; maintenance covers every backend. `open_existing`
    // creates and writes nothing, so `stats` and `verify` only read (they work on a full disk
    // or a read-only mount); only `verify --remove` and `clear` delete.
    let disk =
        DiskTier::open_existing(&config.dir, "cpu", config.max_bytes).map_err(|e| e.to_string())?;
    match cmd {
        "stats" => {
            stats(&config, &disk);
            Ok(ExitCode::SUCCESS)
        }
        "verify" => {
            let r = disk.verify(remove);
            for (path, why) in &r.damaged {
                println!("damaged {}: {why}", path.display());
            }
            println!(
                "metajit cache: {} entr{} ok ({}), {} damaged{}",
                r.ok,
                if r.ok == 1 { "y" } else { "ies" },
                human(r.bytes),
                r.damaged.len(),
                if remove && !r.damaged.is_empty() {
                    " (removed)"
                } else {
                    ""
                }
            );
            Ok(if r.damaged.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        "clear" => {
            let n = disk.clear().map_err(|e| e.to_string())?;
            println!(
                "metajit cache: removed {n} file(s) from {}",
                config.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => unreachable!("checked above"),
    }
}

fn stats(config: &CacheConfig, disk: &DiskTier) {
    let entries = disk.entries();
    println!("directory   {}", config.dir.display());
    println!("format      v{FORMAT_VERSION} ({})", disk.root().display());
    println!(
        "bound       {} (METAJIT_CACHE_MAX_MB)",
        human(config.max_bytes)
    );
    let mut per: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for e in &entries {
        let slot = per.entry(e.backend.as_str()).or_default();
        slot.0 += 1;
        slot.1 += e.bytes;
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    println!("entries     {} ({})", entries.len(), human(total));
    for (backend, (n, bytes)) in &per {
        println!(
            "  {backend:<9} {n} entr{}, {}, {} per entry on average",
            if *n == 1 { "y" } else { "ies" },
            human(*bytes),
            human(bytes / (*n as u64).max(1))
        );
    }
    let ages = |pick: fn(SystemTime, SystemTime) -> bool| {
        entries
            .iter()
            .filter_map(|e| e.modified)
            .reduce(|a, b| if pick(a, b) { a } else { b })
            .and_then(|t| SystemTime::now().duration_since(t).ok())
    };
    if let (Some(newest), Some(oldest)) = (ages(|a, b| a > b), ages(|a, b| a < b)) {
        println!(
            "last used   {} ago (least recently: {} ago)",
            age(newest.as_secs()),
            age(oldest.as_secs())
        );
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
