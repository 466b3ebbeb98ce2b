//! The console's later pages over HTTP: login CSRF, maintenance by role, verification and
//! components (no hook command ever in a page), reopening an alert, and the location form (a
//! .pfx refused as a private key beside the certificate field, a .cer accepted, the password never
//! shown back, a failed accessibility test beside the path with its remediation).

use super::*;
use ibs_storage::AlertClass;

#[tokio::test]
async fn a_signin_post_without_the_pages_guard_is_refused_and_makes_no_session() {
    let c = Console::new(false);
    let (cookie, field) = c.signin_guard().await;
    let (_, other_field) = c.signin_guard().await;
    for (cookie, form) in [
        // A cross-site form post: no guard cookie (SameSite=Strict), no field.
        (None, format!("token={}", c.admin)),
        // The field without the cookie, and the cookie with another page's field.
        (None, format!("signin_csrf={field}&token={}", c.admin)),
        (
            Some(cookie.as_str()),
            format!("signin_csrf={other_field}&token={}", c.admin),
        ),
        (Some(cookie.as_str()), format!("token={}", c.admin)),
    ] {
        let r = c
            .send_raw(Method::POST, "/signin", cookie, Some(&form))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}: {}", r.body);
        assert!(
            r.body.contains("did not come from this console"),
            "{}",
            r.body
        );
        assert!(
            r.headers
                .get_all(header::SET_COOKIE)
                .iter()
                .all(|v| !v.to_str().unwrap().starts_with("ibs_session=")),
            "no session for {form}"
        );
    }
    // The page's own pair works.
    c.sign_in(&c.admin).await;
}

#[tokio::test]
async fn maintenance_begins_and_ends_as_the_api_allows_each_role() {
    let c = Console::new(false);
    let db = c.t.ctl.db().clone();
    let operator = db.create_token(Role::Operator, "o", T0).unwrap();
    let reader = c.sign_in(&c.reader).await;
    let page = c
        .send(Method::GET, "/maintenance", Some(&reader), None)
        .await;
    assert!(
        !page.body.contains("begin-maintenance"),
        "a reader sees no Begin"
    );
    let csrf = page.csrf();
    let r = c
        .send(
            Method::POST,
            "/maintenance/begin",
            Some(&reader),
            Some(&format!("csrf={csrf}&operation=update")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(c.t.ctl.maintenance().unwrap().is_none());

    let op = c.sign_in(&operator).await;
    let page = c.send(Method::GET, "/maintenance", Some(&op), None).await;
    assert!(page.body.contains("begin-maintenance"), "{}", page.body);
    let csrf = page.csrf();
    let r = c
        .send(
            Method::POST,
            "/maintenance/begin",
            Some(&op),
            Some(&format!("csrf={csrf}&operation=fru")),
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/maintenance")
    );
    let page = c.send(Method::GET, "/maintenance", Some(&op), None).await;
    assert!(page.body.contains("<code>fru</code>") && page.body.contains("end-maintenance"));
    // While it is active, Backup now is refused with the API's message.
    let r = c
        .send(
            Method::POST,
            "/backups/now",
            Some(&op),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // Ending it as failed: the operator cannot clear it; the admin can.
    let r = c
        .send(
            Method::POST,
            "/maintenance/end",
            Some(&op),
            Some(&format!("csrf={csrf}&outcome=failed")),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(c.t.ctl.maintenance().unwrap().unwrap().is_failed());
    let page = c.send(Method::GET, "/maintenance", Some(&op), None).await;
    assert!(!page.body.contains("clear-maintenance") && page.body.contains("needs the admin role"));
    let r = c
        .send(
            Method::POST,
            "/maintenance/clear",
            Some(&op),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let admin = c.sign_in(&c.admin).await;
    let acsrf = c
        .send(Method::GET, "/maintenance", Some(&admin), None)
        .await
        .csrf();
    let r = c
        .send(
            Method::POST,
            "/maintenance/clear",
            Some(&admin),
            Some(&format!("csrf={acsrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(c.t.ctl.maintenance().unwrap().is_none());
}

#[tokio::test]
async fn the_components_page_never_shows_a_hook_or_command_and_verification_is_for_operators() {
    let mut comp = testing::command("db-dump", "/usr/local/bin/SECRET-EXPORT --all", None, true);
    comp.pre_hook = Some("/usr/local/bin/SECRET-PRE-HOOK".into());
    comp.post_hook = Some("/usr/local/bin/SECRET-POST-HOOK".into());
    let c = Console::with(false, vec![comp]);
    let sid = c.sign_in(&c.admin).await;
    let page = c.send(Method::GET, "/components", Some(&sid), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("db-dump"), "{}", page.body);
    assert!(
        !page.body.contains("SECRET"),
        "a hook or command shown: {}",
        page.body
    );
    assert!(page.body.contains("set (hidden)"));

    let reader = c.sign_in(&c.reader).await;
    let page = c
        .send(Method::GET, "/verification", Some(&reader), None)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Coverage") && !page.body.contains("verify-now"));
    let r = c
        .send(
            Method::POST,
            "/verification",
            Some(&reader),
            Some(&format!("csrf={}", page.csrf())),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let page = c.send(Method::GET, "/verification", Some(&sid), None).await;
    assert!(page.body.contains("verify-now"));
}

#[tokio::test]
async fn an_operator_closes_and_reopens_an_alert_and_a_reader_cannot() {
    let c = Console::new(false);
    let a =
        c.t.ctl
            .alerts()
            .raise(
                ibs_controller::alerts::AlertKind::RetentionFailed,
                "test",
                T0,
            )
            .unwrap()
            .id;
    let admin = c.sign_in(&c.operator).await;
    let csrf = c
        .send(Method::GET, "/alerts", Some(&admin), None)
        .await
        .csrf();
    let r = c
        .send(
            Method::POST,
            &format!("/alerts/{a}/close"),
            Some(&admin),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = c
        .send(Method::GET, "/alerts?state=all", Some(&admin), None)
        .await;
    assert!(
        page.body.contains(&format!("/alerts/{a}/reopen")),
        "{}",
        page.body
    );

    let reader = c.sign_in(&c.reader).await;
    let rcsrf = c
        .send(Method::GET, "/alerts", Some(&reader), None)
        .await
        .csrf();
    let r = c
        .send(
            Method::POST,
            &format!("/alerts/{a}/reopen"),
            Some(&reader),
            Some(&format!("csrf={rcsrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(c.t.ctl.alert_list(true).unwrap().iter().all(|x| x.id != a));

    let r = c
        .send(
            Method::POST,
            &format!("/alerts/{a}/reopen"),
            Some(&admin),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/alerts"));
    assert!(c.t.ctl.alert_list(true).unwrap().iter().any(|x| x.id == a));
}

#[tokio::test]
async fn the_location_form_refuses_a_pfx_as_a_private_key_and_never_shows_the_password() {
    let c = Console::new(false);
    let sid = c.sign_in(&c.admin).await;
    let csrf = c
        .send(Method::GET, "/settings", Some(&sid), None)
        .await
        .csrf();
    let id = testing::identity();
    let pfx = id.to_pfx("pfx-pass").unwrap();
    let cer = id.certificate().der().to_vec();

    // A .pfx as the certificate: refused beside the field, nothing saved.
    let r = c
        .send_multipart(
            "/settings/location",
            &sid,
            &[
                ("csrf", None, csrf.as_bytes()),
                ("path", None, b"/srv/backups"),
                ("certificate", Some("ibs-backup.pfx"), &pfx),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_, err) = r
        .body
        .split_once("id=\"certificate-error\"")
        .expect("error beside the field");
    assert!(
        err.split("</p>").next().unwrap().contains("private key"),
        "{err}"
    );
    assert!(c.t.ctl.location().unwrap().path.is_none(), "nothing saved");

    // A share the accessibility test cannot reach: refused beside the path with the remediation.
    c.t.opener
        .fail("/srv/unreachable", Some(AlertClass::Authentication));
    let r = c
        .send_multipart(
            "/settings/location",
            &sid,
            &[
                ("csrf", None, csrf.as_bytes()),
                ("path", None, b"/srv/unreachable"),
                ("password", None, b"hunter2-typed-secret"),
                ("username", None, b"svc-backup"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("id=\"path-error\""), "{}", r.body);
    assert!(r.body.contains("Accessibility test failed"), "{}", r.body);
    assert!(
        !r.body.contains("hunter2"),
        "the password is never shown back"
    );

    // The .cer with a reachable path and a password: saved, the test's result shown.
    let r = c
        .send_multipart(
            "/settings/location",
            &sid,
            &[
                ("csrf", None, csrf.as_bytes()),
                ("path", None, b"/srv/backups"),
                ("username", None, b"svc-backup"),
                ("password", None, b"hunter2-typed-secret"),
                ("certificate", Some("ibs-backup.cer"), &cer),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Accessibility test passed"), "{}", r.body);
    assert!(
        !r.body.contains("hunter2"),
        "the password is never shown back"
    );
    let loc = c.t.ctl.location().unwrap();
    assert_eq!(loc.path.as_deref(), Some("/srv/backups"));
    assert!(loc.password_set);
    assert_eq!(
        loc.certificate.unwrap().thumbprint,
        id.certificate().thumbprint()
    );
    let page = c.send(Method::GET, "/settings", Some(&sid), None).await;
    assert!(!page.body.contains("hunter2") && page.body.contains(">set<"));

    // A reader's forged upload is the API's 403.
    let reader = c.sign_in(&c.reader).await;
    let rcsrf = c
        .send(Method::GET, "/settings", Some(&reader), None)
        .await
        .csrf();
    let r = c
        .send_multipart(
            "/settings/location",
            &reader,
            &[
                ("csrf", None, rcsrf.as_bytes()),
                ("path", None, b"/srv/other"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

/// A finished backup job written to `location` (in repository `repo`), as the backup runner
/// records it.
fn backup_at(id: &str, location: &str, repo: &str) -> ibs_types::Job {
    let mut j = ibs_types::Job::new(
        id.into(),
        ibs_types::JobKind::Backup,
        ibs_types::Trigger::OnDemand,
        ibs_types::JobStatus::Succeeded,
        T0 - 60,
    );
    j.started_at = Some(T0 - 60);
    j.finished_at = Some(T0 - 30);
    j.location = Some(location.into());
    j.repository_id = Some(repo.into());
    j.backup_id = Some(id.into());
    j
}

#[tokio::test]
async fn backups_at_a_previous_location_are_tagged_and_left_out_of_the_restore_form() {
    let c = Console::new(false);
    let db = c.t.ctl.db().clone();
    db.put_job(&backup_at(
        "20261205T000000Z-aaaaaaaa",
        "/srv/old-share",
        "r-old",
    ))
    .unwrap();
    db.put_job(&backup_at(
        "20261205T010000Z-bbbbbbbb",
        "/srv/new-share",
        "r-new",
    ))
    .unwrap();
    let mut loc = db
        .get_meta::<ibs_controller::settings::StoredLocation>(ibs_controller::settings::META_KEY)
        .unwrap()
        .unwrap_or_default();
    loc.path = Some("/srv/new-share".into());
    db.set_meta(ibs_controller::settings::META_KEY, &loc)
        .unwrap();

    let sid = c.sign_in(&c.admin).await;
    let list = c.send(Method::GET, "/backups", Some(&sid), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let row = |id: &str| {
        list.body
            .split("<tr>")
            .find(|r| r.contains(&format!("/backups/{id}\"")))
            .unwrap_or_else(|| panic!("no row for {id}: {}", list.body))
            .to_string()
    };
    let (old, new) = (
        row("20261205T000000Z-aaaaaaaa"),
        row("20261205T010000Z-bbbbbbbb"),
    );
    assert!(
        old.contains("old-share") && old.contains("previous location"),
        "{old}"
    );
    assert!(
        new.contains("new-share") && !new.contains("previous location"),
        "{new}"
    );

    let page = c
        .send(
            Method::GET,
            "/backups/20261205T000000Z-aaaaaaaa",
            Some(&sid),
            None,
        )
        .await;
    assert!(
        page.body.contains("id=\"previous-location\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("old-share"), "{}", page.body);

    let restore = c.send(Method::GET, "/restore", Some(&sid), None).await;
    assert_eq!(restore.status, StatusCode::OK);
    assert!(
        restore.body.contains("value=\"20261205T010000Z-bbbbbbbb\""),
        "{}",
        restore.body
    );
    assert!(
        !restore.body.contains("value=\"20261205T000000Z-aaaaaaaa\""),
        "a backup at a previous location is offered for restore: {}",
        restore.body
    );
    assert!(
        restore.body.contains("id=\"elsewhere\""),
        "{}",
        restore.body
    );
}
