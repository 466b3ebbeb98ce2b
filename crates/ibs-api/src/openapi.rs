//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, written by hand next to the routes
//! (the route table in `lib.rs` and this list must change together; a test checks that every
//! documented path answers something other than 404).

use axum::Json;
use serde_json::{json, Value};

/// Every documented operation: (path, method, summary, minimum role).
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "/api/v1/location",
        "get",
        "Show the backup location settings (secrets are never returned)",
        "reader",
    ),
    (
        "/api/v1/location",
        "put",
        "Change the backup location settings (accessibility test; retention confirmation)",
        "admin",
    ),
    (
        "/api/v1/location",
        "delete",
        "Clear the location configuration: defaults with no share, share credentials and legacy key deleted, automatic backups off; history and audit kept (409 while a job runs)",
        "admin",
    ),
    (
        "/api/v1/components",
        "get",
        "List components (hooks, commands and passwords appear only as *_set flags)",
        "reader",
    ),
    (
        "/api/v1/components",
        "put",
        "Replace the components: references to the host's components, or postgres/mariadb/redis components by url with a password value",
        "admin",
    ),
    ("/api/v1/backups", "get", "List backups", "reader"),
    (
        "/api/v1/backups",
        "post",
        "Start an on-demand backup (409 while a job or maintenance runs)",
        "operator",
    ),
    ("/api/v1/backups/{id}", "get", "Show one backup", "reader"),
    (
        "/api/v1/backups/{id}/restore",
        "post",
        "Restore a backup or one component {component?, target, force?, pfx: base64, pfx_password, more_pfx?: [{pfx, pfx_password}]} (pfx files used in memory only)",
        "admin",
    ),
    (
        "/api/v1/backups/{id}/validate",
        "post",
        "Validate a backup as a job: every chunk, every component restored to scratch, databases into temporary databases {pfx: base64, pfx_password} (pfx used in memory only)",
        "admin",
    ),
    (
        "/api/v1/jobs",
        "get",
        "List jobs (backups, skipped runs, restores, verifications, validations)",
        "reader",
    ),
    (
        "/api/v1/jobs/{id}",
        "get",
        "Show one job with live progress",
        "reader",
    ),
    (
        "/api/v1/verification",
        "get",
        "Verification settings, coverage, damaged packs and Corrupted backups",
        "reader",
    ),
    (
        "/api/v1/verification",
        "post",
        "Start a verification of a sample of the packs now (409 while a job or maintenance runs)",
        "operator",
    ),
    (
        "/api/v1/verification/packs",
        "get",
        "Per-pack verification records (last verified, result)",
        "reader",
    ),
    (
        "/api/v1/jobs/{id}/report",
        "get",
        "A validation job's report as JSON (404 until written)",
        "reader",
    ),
    (
        "/api/v1/jobs/{id}/report.html",
        "get",
        "A validation job's report as one self-contained HTML page",
        "reader",
    ),
    (
        "/api/v1/maintenance",
        "get",
        "Show the maintenance operation",
        "reader",
    ),
    (
        "/api/v1/maintenance",
        "post",
        "Begin a maintenance operation {operation: update|fru|secret-rotation}",
        "operator",
    ),
    (
        "/api/v1/maintenance",
        "delete",
        "End the maintenance operation {outcome: succeeded|failed}",
        "operator",
    ),
    (
        "/api/v1/maintenance/end",
        "post",
        "End the maintenance operation (same as DELETE)",
        "operator",
    ),
    (
        "/api/v1/maintenance/clear",
        "post",
        "Clear a failed maintenance operation",
        "admin",
    ),
    (
        "/api/v1/readiness",
        "get",
        "Is a backup running (for update tooling)",
        "reader",
    ),
    (
        "/api/v1/alerts",
        "get",
        "List alerts (?state=open|all)",
        "reader",
    ),
    (
        "/api/v1/alerts/{id}/close",
        "post",
        "Close an alert (it comes back if the cause persists)",
        "admin",
    ),
    (
        "/api/v1/store/prune",
        "post",
        "Delete (or with dry_run list) files under MASBackup that ibs did not create",
        "admin",
    ),
    (
        "/api/v1/tokens",
        "post",
        "Create an API token {role, label, expires_in_seconds?}",
        "admin",
    ),
    (
        "/api/v1/tokens",
        "get",
        "List the API tokens (id, role, label, created_at, expires_at, expired; never a token)",
        "admin",
    ),
    (
        "/api/v1/tokens/{id}",
        "delete",
        "Revoke an API token (refused from then on)",
        "admin",
    ),
    ("/api/v1/audit", "get", "The audit log", "admin"),
];

pub fn build() -> Value {
    let mut paths = serde_json::Map::new();
    for (path, method, summary, role) in OPERATIONS {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = json!({
            "summary": summary,
            "x-ibs-role": role,
            "security": [{ "bearer": [] }],
            "responses": {
                "200": { "description": "OK" },
                "400": { "description": "Invalid input: {error: {code, message, field}}" },
                "401": { "description": "Missing, unknown or expired token" },
                "403": { "description": format!("The token's role is below {role}") },
                "409": { "description": "Conflicts with a running job, a maintenance operation, or needs confirmation" }
            }
        });
    }
    let validate = &mut paths["/api/v1/backups/{id}/validate"]["post"];
    validate["requestBody"] = json!({
        "required": true,
        "content": { "application/json": { "schema": {
            "type": "object",
            "required": ["pfx", "pfx_password"],
            "additionalProperties": false,
            "properties": {
                "pfx": { "type": "string", "contentEncoding": "base64",
                         "description": format!("the .pfx of the backup's certificate, at most {} bytes decoded", ibs_recovery::job::MAX_PFX_BYTES) },
                "pfx_password": { "type": "string", "writeOnly": true }
            }
        } } }
    });
    validate["responses"]["202"] = json!({ "description": "The validation job (poll GET /api/v1/jobs/{id}; reports at /api/v1/jobs/{id}/report and report.html)" });
    validate["responses"]["404"] = json!({ "description": "No such backup" });
    validate["responses"]["413"] = json!({ "description": "The .pfx or the body is too large" });
    let components = &mut paths["/api/v1/components"]["put"];
    components["requestBody"] = json!({
        "required": true,
        "content": { "application/json": { "schema": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": false,
                "description": "Without kind: a reference to a component of the host's configuration file (only priority and essential_for_recovery may change). With kind postgres, mariadb or redis: a service component by url; the password is stored sealed and never returned. Hooks, commands, host paths, tool_dir, password_file and password_env are refused (400): they come only from the host's configuration file.",
                "properties": {
                    "name": { "type": "string" },
                    "kind": { "type": "string", "enum": ["postgres", "mariadb", "redis"] },
                    "url": { "type": "string" },
                    "password": { "type": "string", "writeOnly": true },
                    "essential_for_recovery": { "type": "boolean" },
                    "priority": { "type": "integer" }
                }
            }
        } } }
    });
    paths["/api/v1/tokens/{id}"]["delete"]["responses"]["204"] =
        json!({ "description": "Revoked" });
    paths["/api/v1/tokens/{id}"]["delete"]["responses"]["404"] =
        json!({ "description": "No token has this id" });
    paths.insert("/healthz".into(), json!({ "get": { "summary": "Liveness", "responses": { "200": { "description": "ok" } } } }));
    paths.insert("/metrics".into(), json!({ "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text format 0.0.4" }, "500": { "description": "The state database cannot answer (a fixed text; the cause is in the daemon's log)" } } } }));
    json!({
        "openapi": "3.1.0",
        "info": { "title": "ibs controller API", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": paths,
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}
