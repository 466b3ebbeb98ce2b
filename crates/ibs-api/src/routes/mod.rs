//! Handlers, one module per resource: [`location`] (settings, components), [`backups`] (backups,
//! jobs, restore) [`operations`] (every kind, one list) and [`admin`] (maintenance, readiness, alerts, store prune, tokens, audit).

pub mod admin;
pub mod backups;
pub mod location;
pub mod operations;
