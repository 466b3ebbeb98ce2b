//! Classification of S3 failures into the storage contract's [`ErrorKind`]s, done once, here,
//! where the SDK's error is seen. The rules, in order:
//!
//! | what the gateway or the network says | kind | transient |
//! |---|---|---|
//! | connection refused/reset, DNS, TLS, timeouts, a cut response | Connectivity | yes |
//! | `QuotaExceeded`, `EntityTooLarge`, `InsufficientStorage`/507 | Capacity | no |
//! | `NoSuchBucket` | Path | no |
//! | `AccessDenied` whose message names an object lock or a retention | Locked | no |
//! | `SignatureDoesNotMatch`, `AccessDenied`, `InvalidAccessKeyId`, other 401/403 | Authentication | no |
//! | `NoSuchKey`, `NoSuchUpload`, a bare 404 | NotFound | no |
//! | `InvalidRange`/416 | Invalid | no |
//! | `SlowDown`, `RequestTimeout`, 429, any 5xx | Other | yes |
//! | anything else | Other | no |
//!
//! Messages carry the S3 error code, the HTTP status and the server's message; the SDK's errors
//! never contain the secret key, and the request's signature is not quoted.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use ibs_storage::{ErrorKind, StorageError};

/// The kind and transient flag for an S3 error `code` (possibly empty) with HTTP `status`.
pub fn classify_code(code: &str, status: u16) -> (ErrorKind, bool) {
    match code {
        "QuotaExceeded" | "EntityTooLarge" | "InsufficientStorage" => (ErrorKind::Capacity, false),
        "NoSuchBucket" => (ErrorKind::Path, false),
        "SignatureDoesNotMatch"
        | "AccessDenied"
        | "InvalidAccessKeyId"
        | "AllAccessDisabled"
        | "InvalidToken"
        | "ExpiredToken"
        | "RequestTimeTooSkewed"
        | "InvalidSecurity" => (ErrorKind::Authentication, false),
        "NoSuchKey" | "NoSuchUpload" | "NotFound" => (ErrorKind::NotFound, false),
        "InvalidRange" => (ErrorKind::Invalid, false),
        "SlowDown"
        | "RequestTimeout"
        | "ServiceUnavailable"
        | "InternalError"
        | "Throttling"
        | "ThrottlingException" => (ErrorKind::Other, true),
        _ => match status {
            507 => (ErrorKind::Capacity, false),
            401 | 403 => (ErrorKind::Authentication, false),
            404 => (ErrorKind::NotFound, false),
            416 => (ErrorKind::Invalid, false),
            429 | 500..=599 => (ErrorKind::Other, true),
            _ => (ErrorKind::Other, false),
        },
    }
}

/// Turns an SDK error of operation `op` on `key` into a [`StorageError`].
pub fn classify<E>(
    op: &'static str,
    key: Option<&str>,
    err: SdkError<E, HttpResponse>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e.code().unwrap_or("");
            let (mut kind, transient) = classify_code(code, status);
            if code == "AccessDenied" && is_lock_refusal(e.message().unwrap_or("")) {
                kind = ErrorKind::Locked;
            }
            let code = if code.is_empty() { "(no code)" } else { code };
            let mut out = StorageError::new(
                kind,
                op,
                key,
                format!(
                    "S3 {code} (HTTP {status}): {}",
                    e.message().unwrap_or("no message")
                ),
            );
            out.transient = transient;
            out
        }
        SdkError::DispatchFailure(d) => {
            let what = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "connection failed"
            } else {
                "request could not be sent"
            };
            let detail = d
                .as_connector_error()
                .map(|c| source_chain(c))
                .unwrap_or_default();
            StorageError::new(
                ErrorKind::Connectivity,
                op,
                key,
                format!("S3 {what}: {detail}"),
            )
            .transient()
        }
        SdkError::TimeoutError(_) => {
            StorageError::new(ErrorKind::Connectivity, op, key, "S3 request timed out").transient()
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            StorageError::new(
                ErrorKind::Connectivity,
                op,
                key,
                format!(
                    "S3 response could not be read (HTTP {status}): {}",
                    source_chain(&err)
                ),
            )
            .transient()
        }
        _ => StorageError::new(
            ErrorKind::Other,
            op,
            key,
            format!("S3 request: {}", source_chain(&err)),
        ),
    }
}

/// Whether an `AccessDenied` message says an object lock refused the request (Ceph RGW: "forbidden
/// by object lock", "… shortens an existing retention period …"; AWS: "… protected by object
/// lock").
pub fn is_lock_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("object lock") || m.contains("retention")
}

/// The error and its sources, `a: b: c`.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_contract_kinds() {
        let cases = [
            ("QuotaExceeded", 403, ErrorKind::Capacity, false),
            ("NoSuchBucket", 404, ErrorKind::Path, false),
            (
                "SignatureDoesNotMatch",
                403,
                ErrorKind::Authentication,
                false,
            ),
            ("InvalidAccessKeyId", 403, ErrorKind::Authentication, false),
            ("AccessDenied", 403, ErrorKind::Authentication, false),
            ("NoSuchKey", 404, ErrorKind::NotFound, false),
            ("", 404, ErrorKind::NotFound, false),
            ("InvalidRange", 416, ErrorKind::Invalid, false),
            ("SlowDown", 503, ErrorKind::Other, true),
            ("", 500, ErrorKind::Other, true),
            ("", 503, ErrorKind::Other, true),
            ("", 429, ErrorKind::Other, true),
            ("", 403, ErrorKind::Authentication, false),
            ("", 507, ErrorKind::Capacity, false),
            ("BucketAlreadyExists", 409, ErrorKind::Other, false),
        ];
        assert!(is_lock_refusal("forbidden by object lock"));
        assert!(is_lock_refusal(
            "proposed retain-until date shortens an existing retention period"
        ));
        assert!(!is_lock_refusal(""));
        for (code, status, kind, transient) in cases {
            assert_eq!(
                classify_code(code, status),
                (kind, transient),
                "{code:?} with HTTP {status}"
            );
        }
    }
}
