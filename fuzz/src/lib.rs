//! The bodies of the fuzz targets, as plain functions: cargo-fuzz (nightly) calls them from
//! `fuzz_targets/`, and `cargo test` (stable) replays the committed seeds through them, so
//! they build and run without nightly.

use std::path::Path;

use webhook_exporter::config::{self, DivaltoMode, Expect, StatusMatcher};
use webhook_exporter::probe::verdict;

/// Messages of errors about the whole file, where no line applies.
const FILE_LEVEL: &[&str] = &["YAML document too large or too complex"];

/// Longest config error message (values quoted in it are cut to 80 characters).
const MAX_MESSAGE_CHARS: usize = 1_000;

/// Loads `data` as a config file: it must load, or be refused with a position on every error
/// (but file-level ones) and bounded messages. Any panic is a finding.
pub fn config_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = config::parse(Path::new("fuzz.yaml"), text) {
        assert!(!errors.0.is_empty(), "an Err without errors");
        for error in &errors.0 {
            assert!(
                error.location.is_some() || FILE_LEVEL.iter().any(|m| error.message.contains(m)),
                "no position: {error}"
            );
            assert!(
                error.message.chars().count() <= MAX_MESSAGE_CHARS,
                "a {}-character message",
                error.message.chars().count()
            );
        }
    }
}

/// Patterns the verdict input may pick for `body_matches` / `body_not_matches`.
const PATTERNS: [&str; 4] = ["OK", "(?i)error", "^$", "code\":\"0"];

/// Judges an answer read from `data`: bytes 0-1 the status, byte 2 the expectations (Divalto
/// mode, status rule, body patterns), the rest the body; byte 3 onwards up to the first
/// newline is also the reason phrase. Any panic is a finding.
pub fn verdict(data: &[u8]) {
    let [high, low, flags, body @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*high, *low]);
    let divalto = match flags & 0b11 {
        0 => DivaltoMode::Auto,
        1 => DivaltoMode::On,
        _ => DivaltoMode::Off,
    };
    let accepted = if flags & 0b100 == 0 {
        StatusMatcher::Code(200)
    } else {
        StatusMatcher::Class(2)
    };
    let pattern = |bits: u8| {
        (bits & 0b100 != 0).then(|| {
            // The patterns are constants known to compile.
            regex::Regex::new(PATTERNS[usize::from(bits & 0b11)])
                .expect("a valid pattern")
                .into()
        })
    };
    let rules = Expect {
        status: vec![accepted],
        divalto,
        success_codes: vec!["0".to_owned(), "200".to_owned()],
        body_matches: pattern(flags >> 3),
        body_not_matches: pattern(flags >> 5),
    };
    let reason_phrase = String::from_utf8_lossy(body.split(|b| *b == b'\n').next().unwrap_or(&[]));
    let judged = verdict::judge(status, &reason_phrase, body, &rules);
    if !accepted.matches(status) {
        assert!(judged.reason.is_some(), "status {status} accepted");
    }
    if divalto == DivaltoMode::Off {
        assert!(
            judged.response_code.is_none(),
            "a code read with divalto: off"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every seed of a target, by path.
    fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect();
        seeds.sort();
        seeds
    }

    #[test]
    fn every_config_seed_runs_through_the_loader_target() {
        let seeds = seeds("config_loader");
        assert!(seeds.len() >= 5, "{} seeds", seeds.len());
        for (path, bytes) in seeds {
            eprintln!("{}", path.display());
            super::config_loader(&bytes);
        }
    }

    #[test]
    fn every_answer_seed_runs_through_the_verdict_target() {
        let seeds = seeds("verdict");
        assert!(seeds.len() >= 5, "{} seeds", seeds.len());
        for (path, bytes) in seeds {
            eprintln!("{}", path.display());
            super::verdict(&bytes);
        }
    }
}
