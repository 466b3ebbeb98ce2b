//! The `command` kind: `backup` runs with `sh -c` and its stdout is stored as one file of a stream
//! source; a nonzero exit fails that source. (Its `restore` command, fed the stored bytes on stdin,
//! is run by the controller's restore job.)

use ibs_engine::{SourceOrigin, SourceSpec};
use std::process::Stdio;

/// Starts `backup` for component `component` of job `job_id` (both given to it as `IBS_COMPONENT`
/// and `IBS_JOB_ID`) and returns the stream source `name` reading its stdout into `file_name`.
pub fn source(
    component: &str,
    job_id: &str,
    backup: &str,
    name: String,
    file_name: String,
) -> Result<SourceSpec, String> {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(backup)
        .env("IBS_COMPONENT", component)
        .env("IBS_JOB_ID", job_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the backup command: {e}"))?;
    let out = child.stdout.take().expect("piped stdout");
    Ok(SourceSpec {
        name,
        origin: SourceOrigin::Stream {
            reader: Box::new(CommandOutput {
                child,
                out,
                done: false,
            }),
            file_name,
        },
    })
}

/// The stdout of a `command` component's export. At end of stream it waits for the command and turns a
/// nonzero exit into a read error, so the engine records that source as Failed in the manifest too
/// (the manifest and the job agree). Dropped early (the backup failed), it kills the command.
struct CommandOutput {
    child: std::process::Child,
    out: std::process::ChildStdout,
    done: bool,
}

impl std::io::Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let status = self.child.wait()?;
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
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
