//! The files of a config (`include:` patterns) and, later, their isolation.
//!
//! Patterns are expanded by hand on `std::fs` rather than with the `glob` crate: an include
//! pattern is a folder relative to the main file plus a file-name pattern where `*` matches
//! any run of characters (`conf.d/*.yaml`), which needs no dependency. Only the last segment
//! may hold `*`; matches are sorted by name so every load sees the files in the same order.

use std::path::{Path, PathBuf};

use super::scalars::{shown, shown_path};

/// The files matched by `pattern`, relative to `base_dir` (the main file's folder), sorted.
/// A folder that does not exist matches nothing; a pattern without `*` names one file,
/// which must exist.
///
/// # Errors
/// A `*` outside the last segment, or a folder or file that cannot be read, with the fix.
pub fn expand(base_dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let (folder, name) = match pattern.rsplit_once('/') {
        Some((folder, name)) => (folder, name),
        None => ("", pattern),
    };
    if folder.contains('*') {
        return Err(format!(
            "include: {}: only the file name may hold `*` (write e.g. conf.d/*.yaml)",
            shown(pattern)
        ));
    }
    if name.is_empty() {
        return Err(format!(
            "include: {}: name a file or a file pattern",
            shown(pattern)
        ));
    }
    let dir = base_dir.join(folder);
    if !name.contains('*') {
        let file = dir.join(name);
        return if file.is_file() {
            Ok(vec![file])
        } else {
            Err(format!(
                "include: {}: no such file {}",
                shown(pattern),
                shown_path(&file)
            ))
        };
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("include: cannot read {}: {e}", shown_path(&dir))),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter(|entry| entry.file_name().to_str().is_some_and(|n| matches(name, n)))
        .map(|entry| dir.join(entry.file_name()))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (none too).
/// Hidden files (a leading `.`) match only a pattern that starts with `.`, as in a shell.
fn matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_but_not_hidden_files() {
        assert!(matches("*.yaml", "tenant-a.yaml"));
        assert!(!matches("*.yaml", ".yaml"));
        assert!(matches("t*-*.yaml", "tenant-a.yaml"));
        assert!(!matches("*.yaml", "tenant-a.yml"));
        assert!(!matches("*.yaml", ".hidden.yaml"));
        assert!(matches("a*a", "aa"));
        assert!(!matches("a*a", "a"));
        assert!(matches("exact.yaml", "exact.yaml"));
    }

    #[test]
    fn a_pattern_lists_the_matching_files_sorted_and_a_missing_folder_none() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        std::fs::create_dir(&conf).unwrap();
        for name in ["b.yaml", "a.yaml", "c.yml", ".d.yaml"] {
            std::fs::write(conf.join(name), "probes: []\n").unwrap();
        }
        std::fs::create_dir(conf.join("sub.yaml")).unwrap();
        assert_eq!(
            expand(dir.path(), "conf.d/*.yaml").unwrap(),
            vec![conf.join("a.yaml"), conf.join("b.yaml")]
        );
        assert_eq!(
            expand(dir.path(), "nowhere/*.yaml").unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            expand(dir.path(), "conf.d/c.yml").unwrap(),
            vec![conf.join("c.yml")]
        );
        assert!(
            expand(dir.path(), "conf.d/x.yml")
                .unwrap_err()
                .contains("no such file")
        );
        assert_eq!(
            expand(dir.path(), "*/a.yaml").unwrap_err(),
            "include: \"*/a.yaml\": only the file name may hold `*` (write e.g. conf.d/*.yaml)"
        );
    }
}
