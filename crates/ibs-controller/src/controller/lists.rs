//! The facade's paged lists (ADR 0024): jobs, backups, alerts, tokens, audit records, pack
//! verification records, components and the combined operations list. Each is one SQL page of
//! [`crate::paging`] (the components, one configuration value, are paged in memory by name);
//! running jobs get their live progress here.

use super::Controller;
use crate::alerts::Alert;
use crate::db::AuditRecord;
use crate::db_ops::{OperationFilter, OperationRow};
use crate::db_verify::PackCheck;
use crate::model::{Job, JobKind};
use crate::paging::{page_by_name, Page, PageRequest};
use crate::tokens::TokenInfo;
use crate::{ControllerError, Result};
use ibs_types::{ComponentView, Operation, OperationKind, Trigger};

impl Controller {
    /// A page of the jobs (every kind), newest first.
    pub fn jobs_page(&self, req: &PageRequest) -> Result<Page<Job>> {
        let here = self.ctx.current_location()?;
        Ok(self
            .ctx
            .db
            .jobs_page(None, req)?
            .map(|j| self.served(&here, j)))
    }

    /// A page of the backups (backup jobs not skipped), newest first.
    pub fn backups_page(&self, req: &PageRequest) -> Result<Page<Job>> {
        let here = self.ctx.current_location()?;
        Ok(self
            .ctx
            .db
            .backups_page(req)?
            .map(|j| self.served(&here, j)))
    }

    /// A page of the alerts (open first, newest first), or of the open ones.
    pub fn alerts_page(&self, open_only: bool, req: &PageRequest) -> Result<Page<Alert>> {
        self.ctx.alerts.list_page(open_only, req)
    }

    /// A page of the API tokens, oldest first.
    pub fn tokens_page(&self, req: &PageRequest) -> Result<Page<TokenInfo>> {
        self.ctx.db.tokens_page(self.now(), req)
    }

    /// A page of the audit log, newest first.
    pub fn audit_page(&self, req: &PageRequest) -> Result<Page<AuditRecord>> {
        self.ctx.db.audit_page(req)
    }

    /// A page of the per-pack verification records, least recently verified first.
    pub fn verification_packs_page(&self, req: &PageRequest) -> Result<Page<PackCheck>> {
        self.ctx.db.pack_checks_page(req)
    }

    /// A page of the components in their configured order (a cursor naming a component that
    /// was removed meanwhile is refused: `field: cursor`).
    pub fn components_page(&self, req: &PageRequest) -> Result<Page<ComponentView>> {
        page_by_name(self.components_view()?, |c| c.name.as_str(), req)
            .ok_or_else(|| ControllerError::invalid("cursor", "invalid cursor"))
    }

    /// A page of everything the controller runs or ran, newest first: the jobs and the
    /// operations outside them (retention cleanup, maintenance, location clear, store prune).
    pub fn operations_page(
        &self,
        filter: OperationFilter,
        req: &PageRequest,
    ) -> Result<Page<Operation>> {
        let here = self.ctx.current_location()?;
        Ok(self
            .ctx
            .db
            .operations_page(filter, req)?
            .map(|row| match row {
                OperationRow::Job(j) => job_operation(self.served(&here, *j)),
                OperationRow::Other(o) => o,
            }))
    }
}

/// A job as an entry of the operations list.
fn job_operation(j: Job) -> Operation {
    let kind = match j.kind {
        JobKind::Backup => OperationKind::Backup,
        JobKind::Restore => OperationKind::Restore,
        JobKind::Verify => OperationKind::Verify,
        JobKind::Validate => OperationKind::Validate,
    };
    let trigger = match j.trigger {
        Trigger::Scheduled => "scheduled",
        Trigger::OnDemand => "on-demand",
    };
    Operation {
        link: Some(format!("/api/v1/jobs/{}", j.id)),
        id: j.id,
        kind,
        status: j.status,
        started_at: j.created_at,
        ended_at: j.finished_at,
        trigger: trigger.into(),
        progress: j.progress,
        detail: j.error,
    }
}
