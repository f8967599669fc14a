//! Support for atod's end-to-end tests: locating (and if needed building) the `atod` binary and the plugin
//! fixtures in the target directory the tests themselves were built in.
//!
//! The fixtures are `cdylib` crates under `tests/fixtures/`; `cargo build --workspace` builds them beside the
//! binary. When a test runs without that (say, `cargo nextest run -p atod-tests` alone), the missing artifact
//! is built here with the same profile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The directory of the current profile's artifacts (`target/<profile>`), from the test executable's path
/// (`target/<profile>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps").to_owned()
}

/// The cargo profile that built `profile_dir()`: `debug` is `dev`, every other directory is its profile's name.
fn profile_name() -> String {
    match profile_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    }
}

/// Builds `package` with the tests' profile; serialised so that parallel tests do not race on one build.
fn build(package: &str) {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lies in the workspace");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", package, "--profile", &profile_name()])
        .env("CARGO_TARGET_DIR", profile_dir().parent().expect("target/<profile> has a parent"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {package} failed; run `cargo build --workspace` and look at the error");
}

fn artifact(file: &str, package: &str) -> PathBuf {
    let path = profile_dir().join(file);
    if !path.exists() {
        build(package);
    }
    assert!(path.exists(), "{} is missing after building {package}", path.display());
    path
}

/// The path of the shared library of the fixture `tests/fixtures/<name>` (e.g. `panicky`).
pub fn fixture(name: &str) -> PathBuf {
    let crate_name = format!("atod_fixture_{}", name.replace('-', "_"));
    let file = format!("{}{crate_name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    artifact(&file, &format!("atod-fixture-{name}"))
}

/// The path of the bundled counter plugin built as a shared library (the README's example plugin).
pub fn counter_plugin() -> PathBuf {
    let file = format!("{}atod_plugin_counter{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    artifact(&file, "atod-plugin-counter")
}

/// The path of the `atod` binary.
pub fn atod_bin() -> PathBuf {
    artifact(&format!("atod{}", std::env::consts::EXE_SUFFIX), "atod-cli")
}

/// The output of one `atod` run.
#[derive(Debug)]
pub struct Output {
    /// The exit code; `None` when a signal ended the process (an abort, for example).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Standard output parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `atod` with `args` and extra environment variables, with no standard input and ATOD_PLUGIN_PATH unset
/// unless given.
pub fn atod(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(atod_bin());
    command.args(args).env_remove("ATOD_PLUGIN_PATH").stdin(std::process::Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    let out = command.output().expect("atod runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A child `atod` with captured output (no plugins from `ATOD_PLUGIN_PATH`).
pub fn spawn_atod(args: &[&str]) -> Child {
    Command::new(atod_bin())
        .args(args)
        .env_remove("ATOD_PLUGIN_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`, killing it and failing the test past that: (exit code, stdout, stderr).
pub fn finish(child: Child, limit: Duration, what: &str) -> (Option<i32>, String, String) {
    let id = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let started = Instant::now();
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}
