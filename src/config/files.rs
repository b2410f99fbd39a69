//! A config made of files: the main file and the files its `include:` patterns match, each
//! accepted or refused on its own (per-file isolation), with the last good version of each
//! included file handed from one load to the next.
//!
//! The rules, in one place:
//! - An invalid main file refuses the whole load (nothing changes).
//! - An invalid included file is refused on its own: its last good version (none at the
//!   first load) runs instead, every other file applies.
//! - Names (servers and probes) are unique across files. A kept last good version holds its
//!   names first; a new version that takes a name another file holds is refused, naming
//!   both places. A kept version that clashes with the main file or another kept version is
//!   dropped.
//! - A file no longer matched by the patterns is gone, with its probes and its last good
//!   version.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::scalars::shown;
use super::validate::{self, MainFile};
use super::{Config, ConfigError, ConfigErrors, Location, ProbeSpec, Server};

/// One file's servers and probes as built from it.
#[derive(Debug, Clone)]
pub struct FileVersion {
    /// The file.
    pub(super) file: PathBuf,
    /// Its servers, with where each is written.
    pub(super) servers: Vec<(Server, Option<Location>)>,
    /// Its probes, in file order.
    pub(super) probes: Vec<Arc<ProbeSpec>>,
}

/// The last good version of each included file, kept by the caller between loads (the
/// loading itself stays a function of the files and this).
#[derive(Debug, Clone, Default)]
pub struct GoodVersions(BTreeMap<PathBuf, FileVersion>);

impl GoodVersions {
    /// Number of files with a good version.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no file has one.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How one file fared in a load.
#[derive(Debug, Clone)]
pub struct FileStatus {
    /// The file: the main file as given, an included one as its folder joined to the
    /// pattern's match (what messages, the metric and the API name it by).
    pub file: PathBuf,
    /// Why it was refused; empty when it applied.
    pub errors: Vec<ConfigError>,
    /// Refused, and its last good version runs instead.
    pub kept: bool,
    /// Servers of the version that runs (none when refused and nothing is kept).
    pub servers: usize,
}

impl FileStatus {
    /// Whether the file applied.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The result of a load: the merged config to run, how each file fared (main first, then
/// the included files in pattern order), and the good versions to pass to the next load.
#[derive(Debug)]
pub struct Layout {
    /// What runs: the main file and every included file's accepted or kept version.
    pub config: Config,
    /// Each file's status.
    pub files: Vec<FileStatus>,
    /// The last good version of each included file, for the next load.
    pub good: GoodVersions,
}

impl Layout {
    /// A layout of one file and nothing else (the built-in demo config).
    pub fn single(config: Config) -> Self {
        Self {
            files: Vec::new(),
            good: GoodVersions::default(),
            config,
        }
    }

    /// Whether every file applied.
    pub fn is_complete(&self) -> bool {
        self.files.iter().all(FileStatus::ok)
    }

    /// The errors of every refused file.
    pub fn errors(&self) -> ConfigErrors {
        ConfigErrors(
            self.files
                .iter()
                .flat_map(|f| f.errors.iter().cloned())
                .collect(),
        )
    }

    /// The config when every file applied.
    ///
    /// # Errors
    /// The errors of every refused file.
    pub fn into_complete(self) -> Result<Config, ConfigErrors> {
        if self.is_complete() {
            Ok(self.config)
        } else {
            Err(self.errors())
        }
    }
}

/// Checks a file's probes must pass beyond the config module's own (TLS files that must
/// parse, built by `crate::tls`); run on each file's new version, so a bad key refuses its
/// file only.
pub type Check<'a> = &'a dyn Fn(&[Arc<ProbeSpec>]) -> Vec<ConfigError>;

/// Reads the main file at `path` and the files it includes, refusing each invalid included
/// file on its own (see the module rules); `previous` is the last load's
/// [`Layout::good`].
///
/// # Errors
/// Every problem of the main file (an include pattern that cannot be expanded included):
/// then nothing applies.
pub fn load_layout(
    path: &Path,
    previous: &GoodVersions,
    check: Check<'_>,
) -> Result<Layout, ConfigErrors> {
    let text = super::read_text(path)?;
    layout_of(path, &text, previous, check)
}

/// [`load_layout`] on the main file's text.
pub(super) fn layout_of(
    path: &Path,
    text: &str,
    previous: &GoodVersions,
    check: Check<'_>,
) -> Result<Layout, ConfigErrors> {
    let main = validate::parse_main(path, text)?;
    let errors = check(&main.version.probes);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let files = included_files(path, &main)?;
    let new: Vec<(PathBuf, Result<FileVersion, Vec<ConfigError>>)> = files
        .into_iter()
        .map(|file| {
            let version = read_included(&file, &main, check);
            (file, version)
        })
        .collect();

    let mut claims = Claims::default();
    claims.try_claim(&main.version);
    let mut chosen: HashMap<&Path, &FileVersion> = HashMap::new();
    let mut statuses: HashMap<&Path, FileStatus> = HashMap::new();
    // Refused files first: their last good versions hold their names against new ones.
    for (file, version) in &new {
        let Err(errors) = version else { continue };
        let mut status = FileStatus {
            file: file.clone(),
            errors: errors.clone(),
            kept: false,
            servers: 0,
        };
        if let Some(old) = previous.0.get(file) {
            let clashes = claims.try_claim(old);
            status.kept = clashes.is_empty();
            if status.kept {
                chosen.insert(file, old);
            }
            status.errors.extend(clashes);
        }
        statuses.insert(file, status);
    }
    for (file, version) in &new {
        let Ok(version) = version else { continue };
        let clashes = claims.try_claim(version);
        let mut status = FileStatus {
            file: file.clone(),
            errors: Vec::new(),
            kept: false,
            servers: 0,
        };
        if clashes.is_empty() {
            chosen.insert(file, version);
        } else {
            status.errors = clashes;
            if let Some(old) = previous.0.get(file)
                && claims.try_claim(old).is_empty()
            {
                status.kept = true;
                chosen.insert(file, old);
            }
        }
        statuses.insert(file, status);
    }

    let mut good = GoodVersions::default();
    let mut files = vec![FileStatus {
        file: path.to_owned(),
        errors: Vec::new(),
        kept: false,
        servers: main.version.servers.len(),
    }];
    let mut servers: BTreeMap<String, Server> = main
        .version
        .servers
        .iter()
        .map(|(s, _)| (s.name.clone(), s.clone()))
        .collect();
    let mut probes = main.version.probes.clone();
    for (file, _) in &new {
        if let Some(version) = chosen.get(file.as_path()) {
            servers.extend(
                version
                    .servers
                    .iter()
                    .map(|(s, _)| (s.name.clone(), s.clone())),
            );
            probes.extend(version.probes.iter().cloned());
            good.0.insert(file.clone(), (*version).clone());
        }
        if let Some(mut status) = statuses.remove(file.as_path()) {
            status.servers = chosen.get(file.as_path()).map_or(0, |v| v.servers.len());
            files.push(status);
        }
    }
    let settings = main.settings;
    Ok(Layout {
        config: Config {
            source: path.to_owned(),
            max_concurrent_probes: settings.max_concurrent_probes,
            history_size: settings.history_size,
            run_now_min_gap: settings.run_now_min_gap,
            duration_buckets: settings.duration_buckets,
            servers,
            probes,
        },
        files,
        good,
    })
}

/// The files the main file's patterns match, in pattern order, each once, the main file
/// itself left out.
fn included_files(path: &Path, main: &MainFile) -> Result<Vec<PathBuf>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    // Each file by its canonical path (once per file: a layout may hold thousands).
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let mut seen: std::collections::HashSet<PathBuf> = std::iter::once(canonical(path)).collect();
    for pattern in &main.include {
        match super::include::expand(&main.base_dir, pattern.value.0.trim()) {
            Ok(matched) => {
                for file in matched {
                    if seen.insert(canonical(&file)) {
                        files.push(file);
                    }
                }
            }
            Err(message) => errors.push(ConfigError {
                file: path.to_owned(),
                location: Location::of(pattern.referenced),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The new version of an included file, or why it is refused.
fn read_included(
    file: &Path,
    main: &MainFile,
    check: Check<'_>,
) -> Result<FileVersion, Vec<ConfigError>> {
    let text = super::read_text(file).map_err(|e| e.0)?;
    let version = validate::parse_included(file, &text, main)?;
    let errors = check(&version.probes);
    if errors.is_empty() {
        Ok(version)
    } else {
        Err(errors)
    }
}

/// The names taken so far in a load, with where each is written.
#[derive(Default)]
struct Claims {
    servers: HashMap<String, (PathBuf, Option<Location>)>,
    probes: HashMap<String, (PathBuf, Option<Location>)>,
}

impl Claims {
    /// Takes every name of `version`, or none of them when one is already taken: then the
    /// clashes, each at this file's place and naming the other.
    fn try_claim(&mut self, version: &FileVersion) -> Vec<ConfigError> {
        let servers = version
            .servers
            .iter()
            .map(|(s, at)| ("server", &self.servers, s.name.as_str(), *at));
        let probes = version
            .probes
            .iter()
            .map(|p| ("probe", &self.probes, p.name.as_str(), p.origin.probe));
        let clashes: Vec<ConfigError> = servers
            .chain(probes)
            .filter_map(|(kind, taken, name, at)| {
                let (other, other_at) = taken.get(name)?;
                Some(ConfigError {
                    file: version.file.clone(),
                    location: at,
                    message: format!(
                        "{kind} {} is also defined at {}; names must be unique across all files",
                        shown(name),
                        place(other, *other_at)
                    ),
                })
            })
            .collect();
        if clashes.is_empty() {
            let file = &version.file;
            for (server, at) in &version.servers {
                self.servers
                    .insert(server.name.clone(), (file.clone(), *at));
            }
            for probe in &version.probes {
                self.probes
                    .insert(probe.name.clone(), (file.clone(), probe.origin.probe));
            }
        }
        clashes
    }
}

/// `conf.d/b.yaml:7:5`.
fn place(file: &Path, at: Option<Location>) -> String {
    match at {
        Some(Location { line, column }) => format!("{}:{line}:{column}", file.display()),
        None => file.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_check(_: &[Arc<ProbeSpec>]) -> Vec<ConfigError> {
        Vec::new()
    }

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new(main: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("conf.d")).unwrap();
            std::fs::write(dir.path().join("main.yaml"), main).unwrap();
            Self { dir }
        }

        fn main(&self) -> PathBuf {
            self.dir.path().join("main.yaml")
        }

        fn file(&self, name: &str) -> PathBuf {
            self.dir.path().join("conf.d").join(name)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.file(name), text).unwrap();
        }

        fn load(&self, previous: &GoodVersions) -> Layout {
            load_layout(&self.main(), previous, &no_check).unwrap_or_else(|e| panic!("{e}"))
        }
    }

    const MAIN: &str = "include: [\"conf.d/*.yaml\"]\ndefaults:\n  interval: 5m\nservers:\n  shared: {base_url: 'http://127.0.0.1:1/erp'}\nprobes:\n  - {name: m, url: 'http://127.0.0.1:1/'}\n";

    fn tenant(probe: &str) -> String {
        format!("probes:\n  - name: {probe}\n    server: shared\n    code: C0DE\n")
    }

    fn names(layout: &Layout) -> Vec<&str> {
        layout
            .config
            .probes
            .iter()
            .map(|p| p.name.as_str())
            .collect()
    }

    #[test]
    fn the_include_key_adds_the_files_probes_with_the_main_defaults_in_a_stable_order() {
        let dir = Dir::new(MAIN);
        dir.write("b.yaml", &tenant("b1"));
        dir.write("a.yaml", &tenant("a1"));
        let layout = dir.load(&GoodVersions::default());
        assert_eq!(names(&layout), ["m", "a1", "b1"]);
        let files: Vec<&Path> = layout.files.iter().map(|f| f.file.as_path()).collect();
        assert_eq!(files, [dir.main(), dir.file("a.yaml"), dir.file("b.yaml")]);
        assert!(layout.is_complete());
        let a1 = &layout.config.probes[1];
        assert_eq!(a1.origin.file, dir.file("a.yaml"));
        assert_eq!(a1.schedule.to_string(), "every 5m");
        assert_eq!(layout.config.probes[0].origin.file, dir.main());
        assert_eq!(layout.good.len(), 2);
    }

    #[test]
    fn an_included_file_with_a_main_file_key_is_refused_saying_where_it_belongs() {
        let dir = Dir::new(MAIN);
        dir.write("a.yaml", &format!("{}history_size: 5\n", tenant("a1")));
        dir.write("b.yaml", &tenant("b1"));
        let layout = dir.load(&GoodVersions::default());
        assert_eq!(names(&layout), ["m", "b1"]);
        let refused = &layout.files[1];
        assert!(!refused.ok() && !refused.kept);
        let message = refused.errors[0].to_string();
        assert!(
            message.starts_with(&format!(
                "{}:5:15: history_size: belongs in the main file",
                dir.file("a.yaml").display()
            )),
            "{message}"
        );
        assert!(layout.files[0].ok() && layout.files[2].ok());
        assert!(!layout.is_complete());
    }

    #[test]
    fn a_name_used_in_two_files_is_refused_naming_both_places() {
        let dir = Dir::new(MAIN);
        dir.write("a.yaml", &tenant("x"));
        dir.write(
            "b.yaml",
            &format!(
                "servers:\n  shared: {{base_url: 'http://127.0.0.1:2/'}}\n{}",
                tenant("x")
            ),
        );
        let layout = dir.load(&GoodVersions::default());
        assert_eq!(names(&layout), ["m", "x"]);
        let errors: Vec<String> = layout.files[2]
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        let b = dir.file("b.yaml").display().to_string();
        assert_eq!(
            errors,
            [
                format!(
                    "{b}:2:11: server \"shared\" is also defined at {}:5:11; names must be unique across all files",
                    dir.main().display()
                ),
                format!(
                    "{b}:4:5: probe \"x\" is also defined at {}:2:5; names must be unique across all files",
                    dir.file("a.yaml").display()
                ),
            ]
        );
    }

    #[test]
    fn a_file_broken_on_reload_keeps_its_last_good_version_and_a_removed_file_goes() {
        let dir = Dir::new(MAIN);
        dir.write("a.yaml", &tenant("a1"));
        dir.write("b.yaml", &tenant("b1"));
        let first = dir.load(&GoodVersions::default());
        dir.write("a.yaml", "probes: [\n");
        dir.write("c.yaml", &tenant("c1"));
        std::fs::remove_file(dir.file("b.yaml")).unwrap();
        let second = dir.load(&first.good);
        assert_eq!(names(&second), ["m", "a1", "c1"]);
        assert!(second.files[1].kept && !second.files[1].ok());
        assert!(Arc::ptr_eq(
            &second.config.probes[1],
            &first.config.probes[1]
        ));
        assert_eq!(second.files.len(), 3);
        // A new version may not take a name the kept version holds.
        dir.write("c.yaml", &tenant("a1"));
        let third = dir.load(&second.good);
        assert_eq!(names(&third), ["m", "a1", "c1"]);
        assert!(third.files[2].kept);
        assert!(
            third.files[2].errors[0]
                .message
                .contains("probe \"a1\" is also defined at")
        );
    }

    #[test]
    fn a_probe_may_not_use_another_tenants_server() {
        let dir = Dir::new(MAIN);
        dir.write("a.yaml", "servers:\n  acme: {base_url: 'http://127.0.0.1:1/'}\nprobes:\n  - {name: a1, server: acme, code: C}\n");
        dir.write("b.yaml", "probes:\n  - {name: b1, server: acme, code: C}\n");
        let layout = dir.load(&GoodVersions::default());
        assert_eq!(names(&layout), ["m", "a1"]);
        let message = layout.files[2].errors[0].to_string();
        assert!(
            message.contains("unknown server \"acme\"; define it under servers in this file or in"),
            "{message}"
        );
    }

    #[test]
    fn a_file_matched_twice_is_read_once_and_the_main_file_never_includes_itself() {
        let dir = Dir::new(&MAIN.replace(
            "include: [\"conf.d/*.yaml\"]",
            "include: [\"conf.d/*.yaml\", \"conf.d/a.yaml\", \"*.yaml\"]",
        ));
        dir.write("a.yaml", &tenant("a1"));
        let layout = dir.load(&GoodVersions::default());
        assert!(layout.is_complete(), "{}", layout.errors());
        assert_eq!(names(&layout), ["m", "a1"]);
        assert_eq!(layout.files.len(), 2);
    }

    #[test]
    fn a_main_server_problem_refuses_the_main_file_not_the_tenants_using_it() {
        let dir = Dir::new(&MAIN.replace(
            "  shared: {base_url: 'http://127.0.0.1:1/erp'}\n",
            "  shared: {base_url: 'http://127.0.0.1:1/erp', body_file: missing.json}\n",
        ));
        dir.write("a.yaml", &tenant("a1"));
        let errors = load_layout(&dir.main(), &GoodVersions::default(), &no_check)
            .unwrap_err()
            .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, dir.main());
        assert!(
            errors[0]
                .message
                .starts_with("servers.\"shared\".body_file: cannot read"),
            "{errors:?}"
        );
    }

    #[test]
    fn an_include_pattern_that_cannot_expand_refuses_the_main_file() {
        let dir = Dir::new("include: [\"*/x.yaml\"]\n");
        let errors = load_layout(&dir.main(), &GoodVersions::default(), &no_check)
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("main.yaml:1:11: include: \"*/x.yaml\": only the file name may hold"),
            "{errors}"
        );
    }
}
