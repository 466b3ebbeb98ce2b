//! The `command` kind: `backup` runs with `sh -c` and its stdout is stored as one file of a stream
//! source; a nonzero exit fails that source. (Its `restore` command, fed the stored bytes on stdin,
//! is run by the controller's restore job.)

use ibs_engine::{CancelToken, SourceOrigin, SourceSpec};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Kills process group `pgid` (the command and everything it started) with SIGKILL.
pub(crate) fn kill_group(pgid: u32) {
    use nix::sys::signal::{killpg, Signal};
    let _ = killpg(nix::unistd::Pid::from_raw(pgid as i32), Signal::SIGKILL);
}

/// Starts `backup` for component `component` of job `job_id` (both given to it as `IBS_COMPONENT`
/// and `IBS_JOB_ID`) and returns the stream source `name` reading its stdout into `file_name`.
/// The command runs in its own process group; cancelling `cancel` kills that whole group (the
/// shell and whatever it started), which also ends a read blocked on its stdout.
pub fn source(
    component: &str,
    job_id: &str,
    backup: &str,
    name: String,
    file_name: String,
    cancel: Option<&CancelToken>,
) -> Result<SourceSpec, String> {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(backup)
        .env("IBS_COMPONENT", component)
        .env("IBS_JOB_ID", job_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the backup command: {e}"))?;
    let out = child.stdout.take().expect("piped stdout");
    let reaped = Arc::new(AtomicBool::new(false));
    if let Some(c) = cancel {
        let (pgid, reaped) = (child.id(), reaped.clone());
        // Once the command was waited for, its group id may be reused: never signal it then.
        c.on_cancel(move || {
            if !reaped.load(Ordering::SeqCst) {
                kill_group(pgid);
            }
        });
    }
    Ok(SourceSpec {
        name,
        origin: SourceOrigin::Stream {
            reader: Box::new(CommandOutput {
                child,
                out,
                done: false,
                reaped,
            }),
            file_name,
        },
    })
}

/// The stdout of a `command` component's export. At end of stream it waits for the command and turns a
/// nonzero exit into a read error, so the engine records that source as Failed in the manifest too
/// (the manifest and the job agree). Dropped early (the backup failed or was cancelled), it kills
/// the command's process group.
struct CommandOutput {
    child: std::process::Child,
    out: std::process::ChildStdout,
    done: bool,
    /// Set (before the wait) once the command is waited for.
    reaped: Arc<AtomicBool>,
}

impl CommandOutput {
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = self.child.wait();
        self.reaped.store(true, Ordering::SeqCst);
        status
    }
}

impl std::io::Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let status = self.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!(
                    "backup command exited with {status}"
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        if !self.done {
            kill_group(self.child.id());
            let _ = self.wait();
        }
    }
}
