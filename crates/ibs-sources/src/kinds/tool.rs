//! Running client tools (`pg_dump`, `psql`, `mariadb-dump`, `redis-cli`, …).
//!
//! A tool is looked up in the component's `tool_dir` when one is set (and only there), otherwise on
//! `PATH`; not finding it is [`Cause::MissingTool`]. The password goes into one environment
//! variable of the child; arguments never hold it. A script reaches the tool's stdin from a 0600 file
//! in a 0700 folder ([`script_file`]), removed when the tool is done. stderr is captured (up to 64 KiB) and, when the
//! tool fails, classified into a [`Cause`]; the excerpt put into the error is redacted.

use super::scan::Scanner;
use super::{Cause, ComponentError, ExportInfo, Secret, SharedLog};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

const STDERR_CAP: usize = 64 * 1024;

/// A client tool invocation.
#[derive(Debug, Clone)]
pub struct Tool {
    component: String,
    program: String,
    tool_dir: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    secret_env: Option<&'static str>,
    secret: Secret,
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

impl Tool {
    pub fn new(component: &str, tool_dir: Option<&Path>, program: &str) -> Tool {
        Tool {
            component: component.into(),
            program: program.into(),
            tool_dir: tool_dir.map(Path::to_path_buf),
            args: Vec::new(),
            env: Vec::new(),
            secret_env: None,
            secret: Secret::default(),
        }
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Passes `secret` (if any) in the environment variable `var`.
    pub fn secret(mut self, var: &'static str, secret: &Secret) -> Self {
        self.secret_env = Some(var);
        self.secret = secret.clone();
        self
    }

    fn err(&self, cause: Cause, detail: impl Into<String>) -> ComponentError {
        ComponentError::new(&self.component, cause, detail)
    }

    fn command(&self) -> Result<Command, ComponentError> {
        let path = match &self.tool_dir {
            Some(d) => Some(d.join(&self.program)).filter(|p| p.is_file()),
            None => find_on_path(&self.program),
        }
        .ok_or_else(|| {
            self.err(
                Cause::MissingTool,
                match &self.tool_dir {
                    Some(d) => format!("{} not found in tool_dir {}", self.program, d.display()),
                    None => format!("{} not found on PATH", self.program),
                },
            )
        })?;
        let mut cmd = Command::new(path);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let (Some(var), Some(s)) = (self.secret_env, self.secret.get()) {
            cmd.env(var, s);
        }
        Ok(cmd)
    }

    fn failure(&self, status: std::process::ExitStatus, stderr: &str) -> ComponentError {
        let cause = Cause::classify(stderr);
        let ex = super::excerpt(stderr, &self.secret);
        self.err(
            cause,
            format!(
                "{} exited with {status}{}",
                self.program,
                if ex.is_empty() {
                    String::new()
                } else {
                    format!(": {ex}")
                }
            ),
        )
    }

    fn spawn_err(&self, e: std::io::Error) -> ComponentError {
        let cause = if e.kind() == std::io::ErrorKind::NotFound
            || e.kind() == std::io::ErrorKind::PermissionDenied
        {
            Cause::MissingTool
        } else {
            Cause::Other
        };
        self.err(cause, format!("cannot start {}: {e}", self.program))
    }

    /// Runs the tool to completion with `input` on stdin (or nothing), returning its stdout.
    pub fn run(&self, input: Option<std::fs::File>) -> Result<String, ComponentError> {
        let mut cmd = self.command()?;
        cmd.stdin(match input {
            Some(f) => Stdio::from(f),
            None => Stdio::null(),
        });
        let out = cmd.output().map_err(|e| self.spawn_err(e))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(self.failure(out.status, &stderr));
        }
        if !stderr.trim().is_empty() {
            tracing::debug!(
                "{} ({}): {}",
                self.program,
                self.component,
                self.secret.redact(&stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the tool with `script` written to its stdin.
    pub fn run_script(&self, script: &str) -> Result<String, ComponentError> {
        let s = script_file(script.as_bytes())
            .map_err(|e| self.err(Cause::Other, format!("temporary script file: {e}")))?;
        let stdin = s
            .file
            .reopen()
            .map_err(|e| self.err(Cause::Other, format!("temporary script file: {e}")))?;
        self.run(Some(stdin))
    }

    fn spawn(&self) -> Result<Running, ComponentError> {
        let mut cmd = self.command()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.spawn_err(e))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if buf.len() < STDERR_CAP {
                    buf.extend_from_slice(&chunk[..n.min(STDERR_CAP - buf.len())]);
                }
            }
            String::from_utf8_lossy(&buf).into_owned()
        });
        Ok(Running {
            child,
            stdout,
            stderr: Some(stderr),
            killable: Arc::new(Mutex::new(true)),
        })
    }
}

/// A script for a tool's stdin: a 0600 file inside a fresh 0700 folder of the system's temporary
/// folder, so no other local user can read it or swap it, removed with the returned guards (the open
/// handle keeps the content readable for the tool).
pub(crate) struct ScriptFile {
    // Field order is drop order: the file, then its folder.
    pub file: tempfile::NamedTempFile,
    /// Held for its drop, which removes the folder.
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
}

pub(crate) fn script_file(data: &[u8]) -> std::io::Result<ScriptFile> {
    use std::io::{Seek, Write};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("ibs-script-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    let mut file = tempfile::Builder::new()
        .prefix("script-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir.path())?;
    file.write_all(data)?;
    file.rewind()?;
    Ok(ScriptFile { file, dir })
}

struct Running {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Whether the child may still be signalled: cleared (under its lock) before it is reaped,
    /// so a cancel hook never signals a process id that was reused.
    killable: Arc<Mutex<bool>>,
}

impl Running {
    /// Reaps the child; a cancel that comes later no longer signals its process id.
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        *self.killable.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.child.wait()
    }

    /// Kills the child at the first cancel of `cancel` (at once if it was already cancelled).
    fn kill_on(&self, cancel: &ibs_engine::CancelToken) {
        let killable = self.killable.clone();
        let pid = self.child.id();
        cancel.on_cancel(move || {
            let alive = killable.lock().unwrap_or_else(|p| p.into_inner());
            if *alive {
                use nix::sys::signal::{kill, Signal};
                let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        });
    }
}

type Prepare = Box<dyn FnOnce(&mut ExportInfo) -> Result<(), ComponentError> + Send>;

/// The stdout of an export tool as an engine stream. The tool starts on the first read (after the
/// optional `prepare` step); at end of stream the exit status is checked: success records the
/// export (with its row counts) in the log, failure records a classified [`ComponentError`] and is
/// returned as a read error, so the engine marks the source Failed. Dropped early, it kills the tool.
pub struct ExportReader {
    tool: Tool,
    prepare: Option<Prepare>,
    running: Option<Running>,
    scanner: Option<Box<dyn Scanner>>,
    info: ExportInfo,
    log: SharedLog,
    finished: bool,
}

impl ExportReader {
    pub fn new(
        tool: Tool,
        info: ExportInfo,
        scanner: Option<Box<dyn Scanner>>,
        log: SharedLog,
    ) -> Self {
        ExportReader {
            tool,
            prepare: None,
            running: None,
            scanner,
            info,
            log,
            finished: false,
        }
    }

    /// A step run just before the tool starts (e.g. recording a key count).
    pub fn prepare(
        mut self,
        f: impl FnOnce(&mut ExportInfo) -> Result<(), ComponentError> + Send + 'static,
    ) -> Self {
        self.prepare = Some(Box::new(f));
        self
    }

    fn fail(&mut self, e: ComponentError) -> std::io::Error {
        self.finished = true;
        let msg = e.to_string();
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failures
            .push(e);
        std::io::Error::other(msg)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let Some(mut r) = self.running.take() else {
            return Ok(());
        };
        let status = match r.wait() {
            Ok(s) => s,
            Err(e) => return Err(self.fail(self.tool.err(Cause::Other, e.to_string()))),
        };
        let stderr = r
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            let e = self.tool.failure(status, &stderr);
            return Err(self.fail(e));
        }
        self.finished = true;
        if let Some(s) = self.scanner.take() {
            self.info.rows = s.finish();
        }
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .done
            .push(self.info.clone());
        Ok(())
    }
}

impl Read for ExportReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        if self.running.is_none() {
            if let Some(p) = self.prepare.take() {
                if let Err(e) = p(&mut self.info) {
                    return Err(self.fail(e));
                }
            }
            match self.tool.spawn() {
                Ok(r) => {
                    let cancel = self
                        .log
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .cancel
                        .clone();
                    if let Some(c) = cancel {
                        r.kill_on(&c);
                    }
                    self.running = Some(r)
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        let n = self.running.as_mut().expect("running").stdout.read(buf)?;
        if n == 0 {
            self.finish()?;
        } else if let Some(s) = self.scanner.as_mut() {
            s.feed(&buf[..n]);
        }
        Ok(n)
    }
}

impl Drop for ExportReader {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = r.child.kill();
            let _ = r.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_script_file_is_0600_in_a_0700_folder_and_removed_afterwards() {
        let s = script_file(b"SELECT 1;\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(s.dir.path()), 0o700);
        assert_eq!(mode(s.file.path()), 0o600);
        assert_eq!(s.file.path().parent(), Some(s.dir.path()));
        let mut text = String::new();
        s.file.reopen().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "SELECT 1;\n");
        let dir = s.dir.path().to_path_buf();
        drop(s);
        assert!(!dir.exists(), "the script folder outlived the run");
    }
}
