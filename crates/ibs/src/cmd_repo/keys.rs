//! `ibs repo rewrap`, `ibs repo set-cert` and `ibs repo adopt`: the repository's certificates and
//! this host's writer state.

use super::{load_identity, open_repo, unlock, Ctx};
use crate::cli::{Location, UnlockArgs};
use crate::cmd_keys::load_cert;
use crate::output::exit;
use crate::secrets;
use anyhow::{bail, Result};
use ibs_engine::keyops;
use ibs_engine::state::WriterState;
use ibs_repo::keyring::Unlock;
use std::path::PathBuf;

/// `ibs repo rewrap`: wraps every data key of the old certificate for the new one too.
pub(super) async fn rewrap(
    ctx: &Ctx,
    loc: Location,
    pfx: PathBuf,
    pfx_password_file: Option<PathBuf>,
    cert: PathBuf,
    keep_old: bool,
) -> Result<i32> {
    let mut repo = open_repo(&loc).await?;
    let password = secrets::pfx_password(pfx_password_file.as_deref(), false)?;
    let old = load_identity(&pfx, &password)?;
    let new = load_cert(&cert)?;
    let report = keyops::rewrap(&mut repo, &old, &new, keep_old, ctx.lock_wait).await?;
    if let Ok(mut st) = WriterState::load(&ctx.state_root, &repo.config().id) {
        st.certificate = Some(new.clone());
        st.save()?;
    }
    if ctx.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!(
            "rewrapped {} data keys for {} ({} already rewrapped); new backups use {}",
            report.rewrapped,
            new.thumbprint(),
            report.already_new,
            new.thumbprint()
        );
        if !report.not_for_old.is_empty() {
            outln!(
                "{} data keys are not wrapped for the old certificate and were left as they are",
                report.not_for_old.len()
            );
        }
    }
    Ok(exit::OK)
}

/// `ibs repo set-cert`: new backups are encrypted for another certificate.
pub(super) async fn set_cert(ctx: &Ctx, loc: Location, cert: PathBuf) -> Result<i32> {
    let mut repo = open_repo(&loc).await?;
    let mut state = WriterState::load(&ctx.state_root, &repo.config().id)?;
    let cert = load_cert(&cert)?;
    keyops::set_cert(&mut repo, &mut state, &cert, ctx.lock_wait).await?;
    outln!(
        "new backups are encrypted for certificate {} ({})",
        cert.thumbprint(),
        cert.subject()
    );
    Ok(exit::OK)
}

/// `ibs repo adopt`: rebuilds this host's writer state from the .pfx or the legacy key file.
pub(super) async fn adopt(ctx: &Ctx, loc: Location, u: UnlockArgs) -> Result<i32> {
    let repo = open_repo(&loc).await?;
    let u = unlock(&u)?;
    if matches!(&u, Unlock::Identities(ids) if ids.is_empty()) {
        bail!("adopt needs the .pfx (--pfx) or, in legacy-key mode, the key file (--key-file)");
    }
    let state = keyops::adopt(&repo, &u, &ctx.state_root).await?;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"repository_id": repo.config().id, "state": state.dir})
        );
    } else {
        outln!(
            "adopted repository {}; writer state in {}",
            repo.config().id,
            state.dir.display()
        );
    }
    Ok(exit::OK)
}
