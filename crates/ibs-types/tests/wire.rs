//! The wire format of the API types: the byte layout of the bodies that were built by hand before
//! these types existed (error, token created), absent optional fields left out of requests, secrets
//! never in `Debug`, and the pure checks (`validate_path`, `Cause::classify`, the name parsers).

use ibs_types::location::validate_path;
use ibs_types::*;

#[test]
fn error_body_keeps_its_byte_layout() {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "invalid".into(),
            details: None,
            field: Some("path".into()),
            message: "path: must not be empty".into(),
        },
    };
    assert_eq!(
        serde_json::to_string(&body).unwrap(),
        r#"{"error":{"code":"invalid","field":"path","message":"path: must not be empty"}}"#
    );
}

#[test]
fn token_created_keeps_its_byte_layout() {
    let t = TokenCreated {
        expires_at: None,
        role: Role::Operator,
        token: "ibs_x".into(),
    };
    assert_eq!(
        serde_json::to_string(&t).unwrap(),
        r#"{"expires_at":null,"role":"operator","token":"ibs_x"}"#
    );
}

#[test]
fn location_update_sends_only_the_given_fields_and_hides_secrets_from_debug() {
    let u = LocationUpdate {
        path: Some("/srv/b".into()),
        password: Some(SecretText::new("hunter2".into())),
        ..LocationUpdate::default()
    };
    assert_eq!(
        serde_json::to_string(&u).unwrap(),
        r#"{"path":"/srv/b","password":"hunter2","confirm":false}"#
    );
    assert!(!format!("{u:?}").contains("hunter2"));
    let back: LocationUpdate = serde_json::from_str(r#"{"path":"/srv/b"}"#).unwrap();
    assert_eq!(back.path.as_deref(), Some("/srv/b"));
    assert!(serde_json::from_str::<LocationUpdate>(r#"{"nope":1}"#).is_err());
}

#[test]
fn job_round_trips_and_omits_empty_optional_fields() {
    let j = Job::new(
        "b-1".into(),
        JobKind::Backup,
        Trigger::OnDemand,
        JobStatus::Queued,
        7,
    );
    let v = serde_json::to_value(&j).unwrap();
    assert_eq!(v["trigger"], "on-demand");
    assert_eq!(v["status"], "Queued");
    assert!(v.get("repository_id").is_none() && v.get("verification").is_none());
    assert!(v["corrupted"].is_null());
    assert_eq!(serde_json::from_value::<Job>(v).unwrap(), j);
}

#[test]
fn names_parse_back() {
    for op in [
        MaintenanceOp::Update,
        MaintenanceOp::Fru,
        MaintenanceOp::SecretRotation,
    ] {
        assert_eq!(MaintenanceOp::parse(op.as_str()), Some(op));
        assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
    }
    for o in [MaintenanceOutcome::Succeeded, MaintenanceOutcome::Failed] {
        assert_eq!(MaintenanceOutcome::parse(o.as_str()), Some(o));
        assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
    }
    assert_eq!(MaintenanceOp::parse("reboot"), None);
    assert_eq!(
        JobStatus::parse("PartialSucceeded"),
        Some(JobStatus::PartialSucceeded)
    );
    assert_eq!(Role::parse("admin"), Some(Role::Admin));
}

#[test]
fn validate_path_names_the_field() {
    assert!(validate_path("/srv/backups").unwrap().is_empty());
    assert_eq!(validate_path("\\\\10.0.0.5\\backup").unwrap().len(), 1);
    let e = validate_path("relative/dir").unwrap_err();
    assert_eq!(e.field, "path");
    assert!(e.to_string().starts_with("path: "), "{e}");
}

#[test]
fn classify_reads_client_tool_stderr() {
    assert_eq!(
        Cause::classify("FATAL: password authentication failed for user"),
        Cause::Authentication
    );
    assert_eq!(Cause::classify("Connection refused"), Cause::Unreachable);
    assert_eq!(Cause::classify("something else"), Cause::Other);
}
