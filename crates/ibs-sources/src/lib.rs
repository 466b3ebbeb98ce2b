//! The component kinds of ibs: what a backup reads and a restore writes back.
//!
//! A component (a host folder, a command's output, a PostgreSQL, MariaDB or Redis server, an SQLite
//! file) is configured, validated, mapped to engine sources for a backup, restored, and verified
//! here; the controller decides when, and keeps the records. This crate sits on `ibs-engine` and
//! knows nothing of the controller, the API or recovery, which depend on it.
//!
//! Module map, in dependency order (each depends only on those before it):
//! - [`kinds`]: one module per kind (`files`, `command`, `postgres`, `mariadb`, `redis`, `sqlite`)
//!   and their shared machinery: connection specs, secrets, client tools, failure classes, export
//!   records, row-count scanners, export records rebuilt from stored exports (`recovered`).
//! - [`component`]: the component model, its validation and hooks.
//! - [`mapping`]: dispatch from a component to its kind: engine sources of a backup, restore and
//!   verification, export records of a staged backup.

pub mod component;
pub mod kinds;
pub mod mapping;
